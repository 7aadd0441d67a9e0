"""Scenarios B1-B3, B6, B7, run in this process against the IdP process (B4, B5: children)."""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import httpx

from contenders import Contender, Tokenflight
from idp_process import SECRET, Admin
from tokenflight import TokenManager

RESOURCE_SLOTS = 16  # resource requests in flight, for every contender alike
MOCK_TOKEN = {"access_token": "mock-token", "token_type": "Bearer", "expires_in": 3600}


@dataclass(frozen=True)
class Env:
    token_url: str
    resource_url: str
    admin: Admin


def tenant_ids(scenario: str, rnd: int, name: str, count: int) -> list[str]:
    return [f"{scenario}-r{rnd}-{name}-{i}" for i in range(count)]


async def open_contender(
    env: Env, cls: type[Contender], tenants: list[str], *, lifetime: float = 3600.0
) -> Contender:
    await env.admin.add_clients(tenants, lifetime=lifetime)
    contender = cls(env.token_url, SECRET, lifetime=lifetime)
    await contender.start()
    for tenant in tenants:
        contender.add_tenant(tenant)
    return contender


def describe(exc: BaseException) -> str:
    return type(exc).__name__


# -- B1 cold stampede --------------------------------------------------------------------


async def b1(env: Env, cls: type[Contender], rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """1 tenant, N concurrent callers on a cold cache."""
    (tenant,) = tenant_ids("b1", rnd, cls.name, 1)
    contender = await open_contender(env, cls, [tenant])
    tokens: list[str] = []
    errors: list[str] = []

    async def caller() -> None:
        try:
            tokens.append(await contender.get_token(tenant))
        except Exception as exc:
            errors.append(describe(exc))

    await env.admin.reset()
    started = time.perf_counter()
    with anyio.move_on_after(cfg["limit"]) as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(cfg["b1_callers"]):
                tg.start_soon(caller)
    wall = time.perf_counter() - started
    stats = await env.admin.stats()
    await contender.aclose()
    return {
        "token_requests": stats["token_requests"],
        "wall_ms": wall * 1000,
        "distinct_tokens": len(set(tokens)),
        "callers_served": len(tokens),
        "errors": len(errors),
        "timed_out": scope.cancelled_caught,
    }


# -- B2 hot path -------------------------------------------------------------------------


class _NoOpHook:
    """An `Instrumentation` that does nothing: what a user's own hook costs at least."""

    def fetch_started(self, event: object) -> None:
        pass

    def fetch_finished(self, event: object) -> None:
        pass

    def cooldown_entered(self, event: object) -> None:
        pass

    def slot_evicted(self, event: object) -> None:
        pass


class TokenflightInstrumented(Tokenflight):
    """tokenflight with `OpenTelemetryInstrumentation` (SDK providers) and a no-op hook."""

    name = "tokenflight-otel"

    async def start(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        from tokenflight.otel import OpenTelemetryInstrumentation

        otel = OpenTelemetryInstrumentation(
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            tracer_provider=TracerProvider(),
        )
        self.manager = TokenManager(http=self.stack, instrumentation=[otel, _NoOpHook()])
        otel.observe(self.manager)
        self._cm = self.manager.__aenter__()
        await self._cm
        self._auths = {}


#: B2's extra rows: tokenflight with instrumentation on (issue 13).
B2_VARIANTS: dict[str, type[Contender]] = {TokenflightInstrumented.name: TokenflightInstrumented}


def _hand_rolled_check(tenant: str) -> Callable[[], Awaitable[object]]:
    """B2's baseline: a hand-rolled cache's hit, a dict look-up and a `time.monotonic()`
    check, written as `contenders.HandRolled.get_token` writes it."""
    tokens = {tenant: ("token", time.monotonic() + 3600.0)}

    async def get_token(tenant: str) -> str:
        cached = tokens.get(tenant)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        raise LookupError(tenant)

    return partial(get_token, tenant)


async def _loop(
    fn: Callable[[], Awaitable[object]], count: int, deadline: float
) -> tuple[int, float]:
    """Await fn() up to count times (stopping at the deadline): (calls, seconds)."""
    done = 0
    started = time.perf_counter()
    while done < count:
        await fn()
        done += 1
        if done & 63 == 0 and time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - started


async def _paired(
    base: Callable[[], Awaitable[object]],
    subject: Callable[[], Awaitable[object]],
    count: int,
    chunks: int,
    deadline: float,
) -> tuple[float, float, float, int]:
    """Alternate chunks of base and subject, the garbage collector off while timing.

    Returns the medians of µs per call of each and of their per-chunk difference, and the
    number of subject calls made.
    """
    per = max(1, count // chunks)
    base_us: list[float] = []
    subject_us: list[float] = []
    calls = 0
    gc.collect()
    gc.disable()
    try:
        for _ in range(chunks):
            n, secs = await _loop(base, per, math.inf)
            base_us.append(secs / n * 1e6)
            n, secs = await _loop(subject, per, deadline)
            subject_us.append(secs / n * 1e6)
            calls += n
            if time.perf_counter() > deadline:
                break
    finally:
        gc.enable()
    diff = statistics.median(s - b for s, b in zip(subject_us, base_us, strict=True))
    return statistics.median(base_us), statistics.median(subject_us), diff, calls


class _StaticBearer(httpx.Auth):
    """The cheapest possible auth flow: a fixed Bearer header."""

    async def async_auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = "Bearer static"
        yield request


async def _drive(auth: httpx.Auth, count: int) -> float:
    """µs per request of an auth flow driven by hand, as httpx drives it (no I/O)."""
    request = httpx.Request("GET", "http://mock.invalid/api/resource")
    response = httpx.Response(200, request=request)
    started = time.perf_counter()
    for _ in range(count):
        flow = auth.async_auth_flow(request)
        await flow.__anext__()
        with contextlib.suppress(StopAsyncIteration):
            await flow.asend(response)
    return (time.perf_counter() - started) / count * 1e6


async def _flow_costs(auth: httpx.Auth | None, count: int) -> dict[str, float]:
    """A contender's own auth flow against a static Bearer flow, alternating, medians."""
    if auth is None:
        return {}
    static, own = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            static.append(await _drive(_StaticBearer(), count))
            own.append(await _drive(auth, count))
    finally:
        gc.enable()
    flow_us, static_us = statistics.median(own), statistics.median(static)
    overhead = flow_us - static_us
    return {"flow_us": flow_us, "static_flow_us": static_us, "flow_overhead_us": overhead}


def _mock_handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/oauth/token"):
        return httpx.Response(200, json=MOCK_TOKEN)
    return httpx.Response(200, json={"ok": True})


async def b2(env: Env, cls: type[Contender], rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """A cached token: get_token against a hand-rolled cache's hit; auth overhead per request."""
    (tenant,) = tenant_ids("b2", rnd, cls.name, 1)
    contender = await open_contender(env, cls, [tenant])
    await contender.get_token(tenant)  # warm
    limit = cfg["b2_limit"]
    slow = cls.name == "naive"  # a token request per call: a few dozen calls tell enough
    hand_us, get_us, _, calls = await _paired(
        _hand_rolled_check(tenant),
        contender.hot_getter(tenant),
        40 if slow else cfg["b2_gets"],
        4 if slow else 20,
        time.perf_counter() + limit,
    )
    bare = httpx.AsyncClient(transport=httpx.MockTransport(_mock_handler))
    authed = await contender.mock_client(tenant, _mock_handler)
    url = "http://mock.invalid/api/resource"
    bare_us, authed_us, overhead_us, requests = await _paired(
        partial(bare.get, url),
        partial(authed.get, url),
        40 if slow else cfg["b2_requests"],
        4 if slow else 10,
        time.perf_counter() + limit,
    )
    await bare.aclose()
    await authed.aclose()
    flows = await _flow_costs(contender.flow_auth(tenant), cfg["b2_gets"] // 4)
    await contender.aclose()
    return {
        **flows,
        "get_us": get_us,
        "hand_us": hand_us,
        "get_vs_hand": get_us / hand_us,
        "get_calls": calls,
        "request_us": authed_us,
        "bare_request_us": bare_us,
        "overhead_us": overhead_us,
        "requests": requests,
    }
