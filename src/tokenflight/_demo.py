"""`tokenflight demo`: many workers, many tenants, short tokens, against the bundled IdP."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import anyio
import httpx

from ._admission import Admission
from ._client_auth import ClientSecretBasic
from ._config import ClientCredentials, RefreshPolicy
from ._errors import TokenError
from ._http import (
    DEFAULT_CLIENT_LIMITS,
    DEFAULT_TIMEOUT,
    HTTP_ERRORS,
    make_client,
    pool_admission,
    resolve_stack,
)
from ._manager import TokenManager

__all__ = ["DemoResult", "DemoSettings", "run_demo"]

CALL_ERRORS: tuple[type[Exception], ...] = (TokenError, *HTTP_ERRORS)

# Refresh late in the token's life (85-88%), so each token serves as long as it safely can.
DEMO_REFRESH = RefreshPolicy(fraction=0.88, jitter=0.03)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSettings:
    """The demo's numbers."""

    workers: int = 500
    tenants: int = 50
    lifetime: float = 5.0
    duration: float = 20.0
    latency: float = 0.005

    def minimum_token_requests(self) -> int:
        """Fewest token requests that keep every tenant covered with no caller waiting.

        Each token is usable until a leeway before its expiry; a tenant needs a new one
        every `lifetime - leeway` seconds of the run.
        """
        usable = self.lifetime - DEMO_REFRESH.leeway_for(self.lifetime)
        return self.tenants * math.ceil(self.duration / usable)


@dataclass(slots=True)
class DemoResult:
    """What the demo measured."""

    calls: int = 0
    unauthorized: int = 0
    errors: int = 0
    token_requests: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile call latency, in seconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_demo(settings: DemoSettings, out: TextIO = sys.stdout) -> DemoResult:
    """Start the bundled IdP, run the workers for the configured time, print a summary."""
    from .testing import IdentityProvider

    result = DemoResult()
    async with IdentityProvider(token_lifetime=settings.lifetime, latency=settings.latency) as idp:
        # One client shared by every tenant, on the fastest stack installed, and one
        # admission the size of its pool for every tenant's auth(): the workers themselves
        # are not bounded; requests queue for a connection before they read their token.
        stack = resolve_stack("auto")
        limits = DEFAULT_CLIENT_LIMITS
        gate = Admission(pool_admission(limits))
        async with (
            TokenManager(refresh=DEMO_REFRESH) as tokens,
            make_client(stack, limits=limits, timeout=DEFAULT_TIMEOUT) as http,
        ):
            for n in range(settings.tenants):
                client = idp.add_client(f"tenant-{n}")
                tokens.register(
                    f"tenant-{n}",
                    ClientCredentials(
                        token_url=idp.token_url,
                        client_id=client.client_id,
                        auth=ClientSecretBasic(client.secret),
                    ),
                )
            print(
                f"tokenflight demo: {settings.workers} workers, {settings.tenants} tenants, "
                f"{settings.lifetime:g}s tokens, {settings.duration:g}s, IdP at {idp.url}, "
                f"{stack} client with {gate.limit} connections, workers unbounded",
                file=out,
            )
            started = time.monotonic()
            with anyio.move_on_after(settings.duration):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_progress, result, idp, started, out)
                    for w in range(settings.workers):
                        auth = tokens.auth(f"tenant-{w % settings.tenants}", admission=gate)
                        tg.start_soon(_worker, http, auth, idp.resource_url, result)
            result.elapsed = time.monotonic() - started
            result.token_requests = idp.token_requests
    _summary(settings, result, out)
    return result


async def _worker(
    http: httpx.AsyncClient,
    auth: httpx.Auth,
    url: str,
    result: DemoResult,
) -> None:
    while True:
        began = time.perf_counter()
        try:
            response = await http.get(url, auth=auth)
        except CALL_ERRORS:
            result.errors += 1
            continue
        result.latencies.append(time.perf_counter() - began)
        result.calls += 1
        if response.status_code == 401:
            result.unauthorized += 1
        elif response.status_code != 200:
            result.errors += 1


async def _progress(result: DemoResult, idp: object, started: float, out: TextIO) -> None:
    live = out.isatty()
    while True:
        await anyio.sleep(1.0)
        line = (
            f"  {time.monotonic() - started:5.1f}s  calls {result.calls:>8}  "
            f"401s {result.unauthorized}  errors {result.errors}  "
            f"token requests {getattr(idp, 'token_requests', 0)}"
        )
        if live:
            print("\r" + line, end="", file=out, flush=True)
        elif round(time.monotonic() - started) % 5 == 0:
            print(line, file=out, flush=True)


def _summary(settings: DemoSettings, result: DemoResult, out: TextIO) -> None:
    minimum = settings.minimum_token_requests()
    if out.isatty():
        print(file=out)
    print(
        "\nSummary\n"
        f"  calls made            {result.calls} ({result.calls / result.elapsed:,.0f}/s)\n"
        f"  token requests (IdP)  {result.token_requests} "
        f"(minimum possible {minimum}: {settings.tenants} tenants x "
        f"{minimum // settings.tenants} tokens)\n"
        f"  401 responses         {result.unauthorized}\n"
        f"  errors                {result.errors}\n"
        f"  call latency          p50 {result.percentile(50) * 1000:.2f} ms, "
        f"p99 {result.percentile(99) * 1000:.2f} ms, "
        f"max {max(result.latencies, default=math.nan) * 1000:.2f} ms",
        file=out,
    )
