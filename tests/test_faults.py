"""Resilience: retries, Retry-After, transport failures, shared failure memory, isolation."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest

from helpers import CountingTransport, Recorder, free_port, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ConfigurationError,
    CooldownEntered,
    FetchFinished,
    RefreshPolicy,
    RetryPolicy,
    Token,
    TokenEndpointUnavailable,
    TokenError,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-faults"
FAST = RetryPolicy(
    attempts=4,
    initial_wait=0.01,
    max_wait=0.05,
    total_timeout=5.0,
    cooldown=0.2,
    permanent_cooldown=30.0,
    max_cooldown=60.0,
)


# Not helpers.creds: by URL, also for endpoints that are no IdP (a free port, an unresolvable host).
def creds(url: str, secret: str = SECRET, **kwargs: Any) -> ClientCredentials:
    return ClientCredentials(
        token_url=url, client_id="acme", auth=ClientSecretBasic(secret), **kwargs
    )


@asynccontextmanager
async def running(
    *, retry: RetryPolicy = FAST, refresh: RefreshPolicy | None = None, lifetime: float = 3600, **kw
) -> AsyncIterator[tuple[IdentityProvider, TokenManager]]:
    async with IdentityProvider(token_lifetime=lifetime) as idp:
        idp.add_client("acme", SECRET)
        async with TokenManager(retry=retry, refresh=refresh, **kw) as tm:
            tm.register("acme", creds(idp.token_url))
            yield idp, tm


async def gather(n: int, call) -> list[object]:
    """Run `call()` n times concurrently; return each result or exception."""
    results: list[object] = []

    async def one() -> None:
        try:
            results.append(await call())
        except TokenError as exc:
            results.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    return results


# -- retries -----------------------------------------------------------------------------


async def test_503s_are_retried_once_for_all_callers():
    """Three 503s then a token: 50 concurrent callers share 4 IdP requests and one token."""
    async with running() as (idp, tm):
        idp.inject(Fault(status=503), count=3)
        results = await gather(50, lambda: tm.get_token("acme"))
        assert all(isinstance(r, Token) for r in results)
        assert len({r.access_token for r in results if isinstance(r, Token)}) == 1
        assert idp.token_requests == 4
        assert [r.status for r in idp.requests] == [503, 503, 503, 200]


@pytest.mark.parametrize("kind", ["seconds", "http-date"])
async def test_retry_after_is_honoured(kind):
    """429 with Retry-After (seconds or HTTP-date) delays the retry that long, then a token."""
    async with running(retry=FAST) as (idp, tm):
        if kind == "seconds":
            value, at_least = "2", 1.9  # counted from the 429's arrival
        else:
            # Whole seconds, counted from the wall clock when the 429 arrives: 3 s ahead
            # now is more than 2 s ahead after truncation, and the 429 comes well within 1 s.
            when = datetime.now(UTC) + timedelta(seconds=3)
            value, at_least = format_datetime(when, usegmt=True), 1.0
        idp.inject(Fault(status=429, headers={"Retry-After": value}))
        with anyio.fail_after(5):
            token = await tm.get_token("acme")
        assert token.access_token
        first, second = idp.requests
        assert first.status == 429
        assert second.status == 200
        assert second.time - first.time >= at_least


async def test_retry_after_beyond_budget_fails_at_once():
    """Retry-After longer than the retry budget gives TokenEndpointUnavailable without waiting."""
    recorder = Recorder()
    async with running(instrumentation=recorder) as (idp, tm):
        idp.inject(Fault(status=429, headers={"Retry-After": "60"}), count=None)
        with pytest.raises(TokenEndpointUnavailable) as info:
            await tm.get_token("acme")
        (finished,) = recorder.of(FetchFinished)
        assert (finished.attempts, finished.retry_wait) == (1, 0.0)  # no wait, no retry
        assert idp.token_requests == 1
        assert info.value.retry_after == 60.0
        assert info.value.status_code == 429


async def test_dropped_connection_is_retried():
    """A connection dropped mid-response is retried and the next answer gives a token."""
    async with running() as (idp, tm):
        idp.inject(Fault(status=200, drop=True), count=2)
        with anyio.fail_after(5):
            token = await tm.get_token("acme")
        assert token.access_token
        assert [r.status for r in idp.requests] == [None, None, 200]


@pytest.mark.parametrize("where", ["drop", "refused", "dns"])
async def test_transport_failures_exhaust_budget_with_clear_error(where):
    """Drops, refused connections and DNS failures: retried, then an error naming URL and cause."""
    retry = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02, total_timeout=10)
    async with running(retry=retry) as (idp, tm):
        aiohttp = os.environ.get("TOKENFLIGHT_HTTP") == "aiohttp"  # names aiohttp's errors
        if where == "drop":
            idp.inject(Fault(status=200, drop=True), count=None)
            url = idp.token_url
            cause = "ServerDisconnectedError" if aiohttp else "RemoteProtocolError"
        elif where == "refused":
            url = f"http://127.0.0.1:{free_port()}/oauth/token"
            cause = "ClientConnectorError" if aiohttp else "ConnectError"
        else:
            url = "http://nonexistent.invalid/oauth/token"
            cause = "ClientConnectorDNSError" if aiohttp else "ConnectError"
        tm.register("acme", creds(url, allow_insecure_http=True))
        with anyio.fail_after(10), pytest.raises(TokenEndpointUnavailable) as info:
            await tm.get_token("acme")
        error = info.value
        assert error.attempts == 3
        assert error.endpoint == url
        assert url in str(error)
        assert cause in str(error)
        assert isinstance(error.__cause__, TokenEndpointUnavailable)
        if where == "drop":
            assert idp.token_requests == 3


async def test_timeout_is_a_retried_transport_failure():
    """An IdP slower than the request timeout is retried: 2 IdP requests, then a token."""
    async with running(timeout=httpx.Timeout(0.2)) as (idp, tm):
        idp.inject(Fault(delay=1.0))
        with anyio.fail_after(5):
            token = await tm.get_token("acme")
        assert token.access_token
        assert idp.token_requests == 2


async def test_serve_stale_then_fail_fast_then_recover():
    """IdP down past a token's life: stale token served, then fast shared errors, then recovery."""
    retry = RetryPolicy(attempts=1, total_timeout=5, cooldown=0.3, max_cooldown=0.3)
    refresh = RefreshPolicy(fraction=0.5, jitter=0, leeway=0.2)
    async with running(retry=retry, refresh=refresh, lifetime=2) as (idp, tm):
        first = await tm.get_token("acme")
        idp.inject(Fault(status=503), count=None)
        usable_until = first.expires_at - refresh.leeway_for(first.expires_in)
        with anyio.fail_after(5):
            while anyio.current_time() < usable_until - 0.3:
                assert (await tm.get_token("acme")).access_token == first.access_token
                await anyio.sleep(0.02)
        assert idp.token_requests >= 2  # the background refresh was tried, and failed
        assert tm.stats().total.stale_served >= 1  # and counted as served stale
        await wait_until(lambda: anyio.current_time() >= usable_until)
        before = idp.token_requests
        results = await gather(100, lambda: tm.get_token("acme"))
        assert all(isinstance(r, TokenEndpointUnavailable) for r in results)
        assert idp.token_requests - before <= 1
        # More bursts over a second: at most one request per cooldown.
        before, start = idp.token_requests, anyio.current_time()
        while anyio.current_time() - start < 1.0:
            await gather(100, lambda: tm.get_token("acme"))
            await anyio.sleep(0.05)
        elapsed = anyio.current_time() - start
        assert idp.token_requests - before <= elapsed / retry.cooldown + 1
        idp.clear_faults()
        with anyio.fail_after(3):
            while True:
                try:
                    second = await tm.get_token("acme")
                    break
                except TokenEndpointUnavailable:
                    await anyio.sleep(0.02)
        assert second.access_token != first.access_token
        assert second.expires_at > anyio.current_time()


async def test_redirect_is_not_followed():
    """A 302 from the token endpoint is a ConfigurationError and its target sees no request."""
    async with IdentityProvider() as other, running() as (idp, tm):
        other.add_client("acme", SECRET)
        idp.inject(Fault(status=302, headers={"Location": other.token_url}), count=None)
        with pytest.raises(ConfigurationError) as info:
            await tm.get_token("acme")
        assert "redirect" in str(info.value)
        assert other.token_url in str(info.value)
        assert other.token_requests == 0
        assert idp.token_requests == 1


# -- failure is shared -------------------------------------------------------------------


async def test_wrong_secret_is_one_request_for_a_thousand_callers():
    """1,000 callers on a wrong secret: one IdP request, everyone gets invalid_client."""
    async with running() as (idp, tm):
        tm.register("acme", creds(idp.token_url, secret="wrong"))
        results = await gather(1000, lambda: tm.get_token("acme"))
        assert len(results) == 1000
        assert all(isinstance(r, TokenRequestRefused) for r in results)
        refusals = [r for r in results if isinstance(r, TokenRequestRefused)]
        assert {r.error for r in refusals} == {"invalid_client"}
        assert idp.token_requests == 1
        # Later callers within the cooldown get the remembered error, no request.
        results = await gather(100, lambda: tm.get_token("acme"))
        assert all(isinstance(r, TokenRequestRefused) for r in results)
        assert idp.token_requests == 1
        # Corrected credentials take effect at once.
        tm.register("acme", creds(idp.token_url))
        token = await tm.get_token("acme")
        assert token.access_token
        assert idp.token_requests == 2


def test_cooldown_grows_and_is_capped():
    """RetryPolicy.cooldown_for doubles per failure from the short or long base, up to the cap."""
    policy = RetryPolicy(cooldown=1, permanent_cooldown=30, max_cooldown=100)
    assert [policy.cooldown_for(n, permanent=False) for n in (1, 2, 3, 8)] == [1, 2, 4, 100]
    assert [policy.cooldown_for(n, permanent=True) for n in (1, 2, 3)] == [30, 60, 100]
    assert policy.cooldown_for(10_000, permanent=True) == 100


async def test_observed_cooldown_grows_and_is_capped():
    """Repeated refusals: the gaps between IdP requests grow 0.1, 0.2, 0.4 and stop at the cap."""
    retry = RetryPolicy(attempts=1, permanent_cooldown=0.1, max_cooldown=0.4)
    recorder = Recorder()
    async with running(retry=retry, instrumentation=recorder) as (idp, tm):
        tm.register("acme", creds(idp.token_url, secret="wrong"))
        with anyio.fail_after(5):
            while idp.token_requests < 5:
                with pytest.raises(TokenRequestRefused):
                    await tm.get_token("acme")
                await anyio.sleep(0.01)
        times = [r.time for r in idp.requests]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for gap, cooldown in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=True):
            assert gap >= cooldown
    # Capped (uncapped the fourth would be 0.8); read from the manager, not from the gaps,
    # which a busy machine stretches.
    cooldowns = [e.seconds for e in recorder.of(CooldownEntered)]
    assert cooldowns[:4] == [0.1, 0.2, 0.4, 0.4]


PERMANENT = {
    "invalid_client": None,
    "unauthorized_client": Fault(status=400, body=b'{"error":"unauthorized_client"}'),
    "invalid_scope": None,
    "invalid_target": None,
}
TRANSIENT = {
    "503": Fault(status=503),
    "429": Fault(status=429),
    "transport": Fault(drop=True),
}


@pytest.mark.parametrize("error", sorted(PERMANENT))
async def test_permanent_refusals_latch_with_long_cooldown(error):
    """invalid_client/unauthorized_client/invalid_scope/invalid_target are remembered for long."""
    retry = RetryPolicy(attempts=3, initial_wait=0, cooldown=0.05, permanent_cooldown=30)
    async with IdentityProvider() as idp:
        idp.add_client("acme", SECRET, scopes=["read"], audiences=["https://api.a"])
        kwargs: dict[str, Any] = {}
        if error == "invalid_client":
            kwargs["secret"] = "wrong"
        elif error == "invalid_scope":
            kwargs["scopes"] = ("write",)
        elif error == "invalid_target":
            kwargs["audience"] = "https://api.b"
        else:
            fault = PERMANENT[error]
            assert fault is not None
            idp.inject(fault, count=None)
        async with TokenManager(retry=retry) as tm:
            tm.register("acme", creds(idp.token_url, **kwargs))
            with pytest.raises(TokenRequestRefused) as info:
                await tm.get_token("acme")
            assert info.value.error == error
            assert idp.token_requests == 1  # refusals are not retried
            await anyio.sleep(0.2)  # four short cooldowns
            with pytest.raises(TokenRequestRefused):
                await tm.get_token("acme")
            assert idp.token_requests == 1


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
async def test_transient_failures_back_off_briefly(kind):
    """Transport errors, 5xx and 429 are remembered only for the short cooldown."""
    retry = RetryPolicy(attempts=1, cooldown=0.1, permanent_cooldown=30)
    async with running(retry=retry) as (idp, tm):
        idp.inject(TRANSIENT[kind], count=None)
        with pytest.raises(TokenEndpointUnavailable):
            await tm.get_token("acme")
        with pytest.raises(TokenEndpointUnavailable):
            await tm.get_token("acme")  # remembered
        assert idp.token_requests == 1
        await anyio.sleep(0.15)
        with pytest.raises(TokenEndpointUnavailable):
            await tm.get_token("acme")
        assert idp.token_requests == 2


async def test_half_open_sends_one_probe():
    """When a cooldown ends, 100 concurrent callers cause one probe request, not 100."""
    retry = RetryPolicy(attempts=1, cooldown=0.1)
    async with running(retry=retry) as (idp, tm):
        idp.inject(Fault(status=503), count=None)
        with pytest.raises(TokenEndpointUnavailable):
            await tm.get_token("acme")
        idp.clear_faults()
        await anyio.sleep(0.15)
        results = await gather(100, lambda: tm.get_token("acme"))
        assert all(isinstance(r, Token) for r in results)
        assert idp.token_requests == 2


# -- same-token reuse --------------------------------------------------------------------


async def test_same_token_refresh_keeps_expiry_and_does_not_loop():
    """An early refresh answered with the same token keeps its expiry and is not repeated."""
    refresh = RefreshPolicy(fraction=0.3, jitter=0, leeway=0.2)
    async with running(refresh=refresh, lifetime=2) as (idp, tm):
        idp.reuse_tokens = True
        first = await tm.get_token("acme")
        usable_until = first.expires_at - refresh.leeway_for(first.expires_in)
        with anyio.fail_after(5):
            while anyio.current_time() < usable_until - 0.1:
                token = await tm.get_token("acme")
                assert token.access_token == first.access_token
                assert token.expires_at == first.expires_at
                await anyio.sleep(0.01)
        assert 2 <= idp.token_requests <= 3  # the first fetch and one early refresh


async def test_same_token_refresh_keeps_the_leeway():
    """After a same-token refresh, a call within the leeway of expiry is not served from cache."""
    refresh = RefreshPolicy(fraction=0.3, jitter=0, leeway=0.3)
    async with running(refresh=refresh, lifetime=2) as (idp, tm):
        idp.reuse_tokens = True
        first = await tm.get_token("acme")
        with anyio.fail_after(3):
            while idp.token_requests < 2:  # keep using it so that it is refreshed early
                await tm.get_token("acme")
                await anyio.sleep(0.01)
        await wait_until(lambda: idp.requests[-1].status == 200)
        await wait_until(lambda: anyio.current_time() >= first.expires_at - 0.1)
        before = idp.token_requests
        await tm.get_token("acme")
        assert idp.token_requests == before + 1


# -- isolation and bounded concurrency ---------------------------------------------------


async def test_slow_tenant_does_not_delay_others():
    """While one tenant's IdP hangs, another tenant's callers get their tokens."""
    async with IdentityProvider() as fast, IdentityProvider() as slow:
        fast.add_client("acme", SECRET)
        slow.add_client("acme", SECRET)
        slow.inject(Fault(delay=30), count=None)
        slow_done = anyio.Event()
        async with TokenManager(retry=FAST) as tm:
            tm.register("fast", creds(fast.token_url))
            tm.register("slow", creds(slow.token_url))

            async def slow_caller() -> None:
                await tm.get_token("slow")
                slow_done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_caller)
                await wait_until(lambda: slow.token_requests == 1)
                with anyio.fail_after(2):
                    for _ in range(10):
                        tm.invalidate("fast")
                        assert (await tm.get_token("fast")).access_token
                assert not slow_done.is_set()
                assert fast.token_requests == 10
                tg.cancel_scope.cancel()


async def test_background_refreshes_are_bounded():
    """With RefreshPolicy(max_concurrent=3), 20 tenants due at once refresh 3 at a time."""
    transport = CountingTransport()
    refresh = RefreshPolicy(fraction=0.5, jitter=0, leeway=0.1, max_concurrent=3)
    async with (
        IdentityProvider(token_lifetime=1, latency=0.05) as idp,
        httpx.AsyncClient(transport=transport) as client,
        TokenManager(refresh=refresh, retry=FAST, http_client=client) as tm,
    ):
        idp.add_client("acme", SECRET)
        tenants = [f"t{i}" for i in range(20)]
        for tenant in tenants:
            tm.register(tenant, creds(idp.token_url))
        await gather(1, lambda: _all(tm, tenants))
        await gather(1, lambda: _all(tm, tenants))  # used since fetch: worth refreshing
        transport.peak = 0
        await wait_until(lambda: tm.stats().total.refreshes >= 20)
        assert 2 <= transport.peak <= 3
        assert idp.token_requests == 40


async def _all(tm: TokenManager, tenants: list[str]) -> list[Token]:
    results: list[Token] = []

    async def one(tenant: str) -> None:
        results.append(await tm.get_token(tenant))

    async with anyio.create_task_group() as tg:
        for tenant in tenants:
            tg.start_soon(one, tenant)
    return results
