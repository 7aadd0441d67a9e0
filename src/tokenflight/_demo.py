"""`tokenflight demo`: many workers, many tenants, short tokens, against the bundled IdP."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

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
from ._live import Progress, live_progress, print_summary
from ._manager import TokenManager

if TYPE_CHECKING:
    from .testing import IdentityProvider

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
    completed: bool = False  # False: interrupted before the configured duration

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
            try:
                with live_progress(out) as progress, anyio.move_on_after(settings.duration):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_progress, settings, result, idp, started, progress)
                        for w in range(settings.workers):
                            auth = tokens.auth(f"tenant-{w % settings.tenants}", admission=gate)
                            tg.start_soon(_worker, http, auth, idp.resource_url, result)
                result.completed = True
            finally:  # Ctrl-C, or a cancelled caller: the summary so far
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


async def _progress(
    settings: DemoSettings,
    result: DemoResult,
    idp: IdentityProvider,
    started: float,
    progress: Progress,
) -> None:
    minimum = settings.minimum_token_requests()
    calls_before, at_before = 0, started
    while True:
        await anyio.sleep(0.5 if progress.is_live else 1.0)
        now = time.monotonic()
        rate = (result.calls - calls_before) / max(now - at_before, 1e-9)
        calls_before, at_before = result.calls, now
        progress.update(
            [
                ("elapsed", f"{now - started:.1f}/{settings.duration:g}s"),
                ("calls/s", f"{rate:,.0f}"),
                ("token requests", f"{idp.token_requests} (minimum {minimum})"),
                ("401s", str(result.unauthorized)),
                ("errors", str(result.errors)),
            ]
        )


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def _summary(settings: DemoSettings, result: DemoResult, out: TextIO) -> None:
    """Print what the demo measured (so far, when it was interrupted)."""
    minimum = settings.minimum_token_requests()
    rate = result.calls / result.elapsed if result.elapsed > 0 else 0.0
    title = "Summary"
    if not result.completed:
        title += f" (interrupted after {result.elapsed:.1f} of {settings.duration:g} s)"
    print_summary(
        out,
        title,
        [
            ("calls made", f"{result.calls} ({rate:,.0f}/s)"),
            (
                "token requests (IdP)",
                f"{result.token_requests} (minimum possible {minimum}: {settings.tenants} "
                f"tenants x {minimum // settings.tenants} tokens)",
            ),
            ("401 responses", str(result.unauthorized)),
            ("errors", str(result.errors)),
            (
                "call latency",
                f"p50 {_ms(result.percentile(50))}, p99 {_ms(result.percentile(99))}, "
                f"max {_ms(max(result.latencies, default=math.nan))}",
            ),
        ],
    )
