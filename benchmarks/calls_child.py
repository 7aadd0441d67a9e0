"""One B8 case in a fresh process: `python benchmarks/calls_child.py SPEC_JSON`.

Run by `scenario_calls.run()`. Sets up one contender on one HTTP stack, makes its first
call, lets W workers loop `GET resource_url` for D seconds through its one shared client,
prints one JSON line of figures and exits. For Authlib on the "httpx" stack it makes
`import httpx2` fail first: Authlib 1.9 picks httpx2 whenever it can import it. Imports
only what the case needs, so that start-up stays short.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import sys
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

SETUP_LIMIT = 15.0  # start-up, first token and first call
LAG_TICK = 0.01  # the event-loop lag probe sleeps this long, again and again
MAX_CALLS_PER_WORKER = 1_000_000
# calls/s counts the 2xx responses completed from this share of the window (at most
# SETTLE_MAX seconds) to its end: at the start, all W workers build their first request at
# once, a one-time burst that a short window would otherwise charge to the throughput.
SETTLE_SHARE = 0.25
SETTLE_MAX = 1.0
TOKENFLIGHT = "tokenflight"

Row = dict[str, Any]
Call = Callable[[], Awaitable[Any]]


def _stack_client(stack: str, **kwargs: Any) -> Any:
    """A default `AsyncClient` of the stack (aiohttp: httpx2 over httpx-aiohttp's transport)."""
    if stack == "httpx":
        import httpx

        return httpx.AsyncClient(**kwargs)
    import httpx2

    if stack == "aiohttp":
        from httpx_aiohttp.httpx2 import AiohttpTransport

        kwargs["transport"] = AiohttpTransport()
    return httpx2.AsyncClient(**kwargs)


@asynccontextmanager
async def _tokenflight(spec: Row) -> AsyncIterator[list[Call]]:
    """`tokens.client(tenant, stack=...)`, or a default client with `auth=tokens.auth(tenant)`."""
    from tokenflight import ClientCredentials, ClientSecretBasic, TokenManager

    stack = spec["stack"]
    url = spec["resource_url"]
    async with TokenManager(http=stack) as tokens, AsyncExitStack() as closing:
        for tenant in spec["tenants"]:
            creds = ClientCredentials(
                token_url=spec["token_url"],
                client_id=tenant,
                auth=ClientSecretBasic(spec["secret"]),
            )
            tokens.register(tenant, creds)
        if spec["contender"] == TOKENFLIGHT:
            clients = [tokens.client(tenant, stack=stack) for tenant in spec["tenants"]]
        else:  # the bare auth() path: the manager's default admission applies
            clients = [_stack_client(stack, auth=tokens.auth(t)) for t in spec["tenants"]]
        for client in clients:
            closing.push_async_callback(client.aclose)
        yield [partial(client.get, url) for client in clients]


@asynccontextmanager
async def _hand_rolled(spec: Row) -> AsyncIterator[list[Call]]:
    """A dict of tokens and an asyncio.Lock per tenant, re-checked after the lock."""
    client = _stack_client(spec["stack"])
    margin = min(30.0, 0.1 * spec["lifetime"])
    cache: dict[str, tuple[str, float]] = {}
    locks = {tenant: asyncio.Lock() for tenant in spec["tenants"]}

    async def token(tenant: str) -> str:
        cached = cache.get(tenant)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        async with locks[tenant]:
            cached = cache.get(tenant)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            started = time.monotonic()
            response = await client.post(
                spec["token_url"],
                data={"grant_type": "client_credentials"},
                auth=(tenant, spec["secret"]),
            )
            response.raise_for_status()
            body = response.json()
            lifetime = float(body.get("expires_in", 300))
            access = str(body["access_token"])
            cache[tenant] = (access, started + lifetime - min(margin, lifetime * 0.1))
            return access

    async def call(tenant: str) -> Any:
        access = await token(tenant)
        return await client.get(spec["resource_url"], headers={"Authorization": f"Bearer {access}"})

    try:
        yield [partial(call, tenant) for tenant in spec["tenants"]]
    finally:
        await client.aclose()


@asynccontextmanager
async def _authlib(spec: Row) -> AsyncIterator[list[Call]]:
    """One `AsyncOAuth2Client` per tenant: `fetch_token()` once, then `client.get(url)`."""
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    clients = []
    try:
        for tenant in spec["tenants"]:
            kwargs: Row = {}
            if spec["stack"] == "aiohttp":
                from httpx_aiohttp.httpx2 import AiohttpTransport

                kwargs["transport"] = AiohttpTransport()
            client = AsyncOAuth2Client(
                client_id=tenant,
                client_secret=spec["secret"],
                token_endpoint=spec["token_url"],
                grant_type="client_credentials",
                leeway=min(60.0, 0.1 * spec["lifetime"]),
                **kwargs,
            )
            clients.append(client)
            await client.fetch_token()
        yield [partial(client.get, spec["resource_url"]) for client in clients]
    finally:
        for client in clients:
            await client.aclose()


SETUPS = {
    TOKENFLIGHT: _tokenflight,
    "tokenflight-auth": _tokenflight,
    "hand-rolled": _hand_rolled,
    "authlib": _authlib,
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    """What the workers and the lag probe saw."""

    settled: float  # calls/s counts from here...
    deadline: float  # ...to here; no call starts after it
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    in_window: int = 0


async def _worker(call: Call, tally: Tally) -> None:
    """Call, again and again, until the deadline; each outcome and latency counted."""
    for _ in range(MAX_CALLS_PER_WORKER):
        begun = time.perf_counter()
        if begun >= tally.deadline:
            return
        ok = False
        try:
            response = await call()
        except Exception as exc:
            tally.errors[type(exc).__name__] += 1
            await asyncio.sleep(0)  # a failing call must not spin without yielding
        else:
            tally.statuses[str(response.status_code)] += 1
            ok = 200 <= response.status_code < 300
        ended = time.perf_counter()
        tally.latencies.append(ended - begun)
        if ok and tally.settled <= ended <= tally.deadline:
            tally.in_window += 1


async def _probe(tally: Tally) -> None:
    """Sleep LAG_TICK again and again until the deadline; record how late each wakes up."""
    while (begun := time.perf_counter()) < tally.deadline:
        await asyncio.sleep(LAG_TICK)
        tally.lags.append(time.perf_counter() - begun - LAG_TICK)


async def _measure(calls: list[Call], spec: Row) -> Row:
    """W workers for D seconds (then their last calls finish), and the lag probe."""
    duration = spec["duration"]
    started = time.perf_counter()
    settle = min(SETTLE_MAX, duration * SETTLE_SHARE)
    tally = Tally(settled=started + settle, deadline=started + duration)
    cpu = time.process_time()
    timed_out = False
    try:
        async with asyncio.timeout(duration + spec["grace"]), asyncio.TaskGroup() as tg:
            tg.create_task(_probe(tally))
            for i in range(spec["workers"]):
                tg.create_task(_worker(calls[i % len(calls)], tally))
    except TimeoutError:
        timed_out = True
    cpu = time.process_time() - cpu
    responses = sum(tally.statuses.values())
    return {
        "calls": responses,
        "ok": sum(n for code, n in tally.statuses.items() if code.startswith("2")),
        "calls_per_s": tally.in_window / (duration - settle),
        "caller_401": tally.statuses.get("401", 0),
        "statuses": dict(tally.statuses),
        "errors": sum(tally.errors.values()),
        "errors_by_type": dict(tally.errors),
        "p50_ms": percentile(tally.latencies, 0.50) * 1000,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000,
        "max_ms": max(tally.latencies, default=math.nan) * 1000,
        "lag_p99_ms": percentile(tally.lags, 0.99) * 1000,
        "lag_max_ms": max(tally.lags, default=math.nan) * 1000,
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu,
        "cpu_us_per_call": cpu / responses * 1e6 if responses else math.nan,
        "timed_out": timed_out,
    }


def _ran_on(response: Any) -> str:
    """The stack a response came through: its package, and whether httpcore carried it."""
    package = type(response).__module__.split(".")[0]
    if "network_stream" in response.extensions:  # set by httpcore and httpcore2 only
        return package
    return "aiohttp" if package == "httpx2" else f"{package} without httpcore"


def _describe(exc: BaseException) -> str:
    """The exception's type and message; for a group, the first exception inside it."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _emit_and_exit(result: Row) -> NoReturn:
    """Print the case's one JSON line and leave: closing pools and clients is not measured."""
    print(json.dumps(result), flush=True)
    os._exit(0)


async def _child(spec: Row) -> None:
    setup = SETUPS[spec["contender"]]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(SETUP_LIMIT + spec["duration"] + spec["grace"]):
            async with setup(spec) as calls:
                async with asyncio.timeout(SETUP_LIMIT):
                    warm = [await call() for call in calls]  # first token, first connection
                setup_s = time.perf_counter() - started
                figures = await _measure(calls, spec)
                _emit_and_exit({"setup_s": setup_s, "ran_on": _ran_on(warm[0]), **figures})
    except Exception as exc:
        _emit_and_exit({"error": _describe(exc)[:300], "timed_out": False})


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["contender"] == "authlib" and spec["stack"] == "httpx":
        sys.modules["httpx2"] = None  # type: ignore[assignment]  # Authlib falls back to httpx
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    warnings.simplefilter("ignore")  # Authlib's deprecation of its httpx fallback
    asyncio.run(_child(spec))


if __name__ == "__main__":
    main()
