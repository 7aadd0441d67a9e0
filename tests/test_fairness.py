"""Fairness across identity providers, and rate limits per provider, over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from helpers import creds, wait_until
from tokenflight import (
    RetryPolicy,
    TokenEndpointUnavailable,
    TokenManager,
)
from tokenflight._origins import origin_of
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "fairness-secret"
HELD = 600.0  # a slow provider's latency: its requests stay open until the test ends
RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, total_timeout=5.0)


@asynccontextmanager
async def providers(
    slow_latency: float = 0.0, *, tenants: int = 2
) -> AsyncIterator[tuple[IdentityProvider, IdentityProvider]]:
    """Two providers on two ports: `slow` with clients s0..s{n-1}, `fast` with client f."""
    async with (
        IdentityProvider(latency=slow_latency) as slow,
        IdentityProvider() as fast,
    ):
        for n in range(tenants):
            slow.add_client(f"s{n}", SECRET)
        fast.add_client("f", SECRET)
        yield slow, fast


async def test_a_slow_provider_does_not_delay_the_tenants_of_another():
    """30 cold tenants on a provider that holds every request open take its share of the
    fetch places; a tenant on another provider gets its token while all of them are held."""
    async with (
        providers(HELD, tenants=30) as (slow, fast),
        TokenManager(retry=RETRY, max_concurrent_fetches=20, max_fetches_per_origin=10) as tm,
    ):
        for n in range(30):
            tm.register(f"s{n}", creds(slow, f"s{n}"))
        tm.register("f", creds(fast, "f"))
        async with anyio.create_task_group() as callers:
            for n in range(30):
                callers.start_soon(tm.get_token, f"s{n}")
            limiter = tm._fetch_limiter
            await wait_until(lambda: slow.token_requests == 10)
            await wait_until(lambda: limiter.statistics().waiting == 20)
            with anyio.fail_after(10):  # a guard, not a measure: the state is asserted below
                token = await tm.get_token("f")
            assert token.access_token
            assert fast.token_requests == 1
            assert slow.token_requests == 10  # held open: none answered, none more sent
            assert slow.requests == []
            callers.cancel_scope.cancel()


async def test_the_wait_for_a_place_counts_against_the_fetch_budget():
    """A fetch queued behind a full provider fails with TokenEndpointUnavailable within its
    own total_timeout, the wait included: it does not get a fresh budget once it has a place."""
    budget = RetryPolicy(attempts=1, total_timeout=1.0)
    async with (
        providers(HELD, tenants=2) as (slow, _),
        TokenManager(retry=budget, max_concurrent_fetches=2, max_fetches_per_origin=1) as tm,
    ):
        tm.register("s0", creds(slow, "s0"))
        tm.register("s1", creds(slow, "s1"))

        async def hold() -> None:
            with contextlib.suppress(TokenEndpointUnavailable):  # its own budget runs out too
                await tm.get_token("s0")

        async with anyio.create_task_group() as callers:
            callers.start_soon(hold)  # takes the provider's one place
            await wait_until(lambda: slow.token_requests == 1)
            with anyio.fail_after(30), pytest.raises(TokenEndpointUnavailable) as queued:
                await tm.get_token("s1")
            # Out of budget while queued, or just after its place came (when s0's own budget
            # ran out a moment before): either way the error says the wait was counted. Had
            # the wait been outside the budget, the flight's outer bound (total_timeout + 1 s)
            # would have ended it with a plain "took longer than its budget".
            assert "waiting for a place" in str(queued.value)
            assert "fetch budget of 1s" in str(queued.value)
            assert tm._fetch_limiter.statistics().waiting == 0
            callers.cancel_scope.cancel()


async def test_max_fetches_per_origin_is_configurable():
    """max_fetches_per_origin=3 keeps at most 3 requests open at one provider."""
    async with (
        providers(HELD, tenants=6) as (slow, _),
        TokenManager(retry=RETRY, max_concurrent_fetches=10, max_fetches_per_origin=3) as tm,
    ):
        for n in range(6):
            tm.register(f"s{n}", creds(slow, f"s{n}"))
        async with anyio.create_task_group() as callers:
            for n in range(6):
                callers.start_soon(tm.get_token, f"s{n}")
            await wait_until(lambda: slow.token_requests == 3)
            await wait_until(lambda: tm._fetch_limiter.statistics().waiting == 3)
            assert tm._fetch_limiter.in_flight() == 3
            assert slow.token_requests == 3
            callers.cancel_scope.cancel()


async def test_a_429_cools_down_its_provider_for_every_tenant():
    """A 429 with Retry-After: 60 stops requests to that provider for every tenant on it, and
    the failing slot is not asked again for 60 s; another provider is not affected."""
    async with providers(tenants=2) as (slow, fast), TokenManager(retry=RETRY) as tm:
        tm.register("s0", creds(slow, "s0"))
        tm.register("s1", creds(slow, "s1"))
        tm.register("f", creds(fast, "f"))
        slow.inject(Fault(status=429, headers={"Retry-After": "60"}), count=None)
        with pytest.raises(TokenEndpointUnavailable) as first:
            await tm.get_token("s0")
        assert first.value.retry_after == 60.0
        assert slow.token_requests == 1
        for _ in range(10):  # a caller every so often: answered from the cooldown
            with pytest.raises(TokenEndpointUnavailable):
                await tm.get_token("s0")
        with pytest.raises(TokenEndpointUnavailable) as other:
            await tm.get_token("s1")  # the same provider: no request sent
        assert slow.token_requests == 1
        assert other.value.status_code == 429
        assert other.value.retry_after is not None
        assert 55.0 < other.value.retry_after <= 60.0
        assert "rate limited" in str(other.value)
        slot = tm._table.find("s0", None, None, None)
        assert slot is not None
        assert slot.retry_at - anyio.current_time() > 55.0  # Retry-After, not 1-2-4 s
        assert (await tm.get_token("f")).access_token  # another provider: served


async def test_an_absurd_retry_after_is_capped_at_max_cooldown():
    """Retry-After: 86400 cools the provider down for RetryPolicy.max_cooldown at most."""
    retry = RetryPolicy(attempts=2, initial_wait=0.01, total_timeout=5.0, max_cooldown=20.0)
    async with providers() as (slow, _), TokenManager(retry=retry) as tm:
        tm.register("s0", creds(slow, "s0"))
        slow.inject(Fault(status=429, headers={"Retry-After": "86400"}))
        with pytest.raises(TokenEndpointUnavailable) as info:
            await tm.get_token("s0")
        assert info.value.retry_after == 20.0
        slot = tm._table.find("s0", None, None, None)
        assert slot is not None
        assert slot.retry_at - anyio.current_time() <= 20.0


@pytest.mark.parametrize(("retry_after", "cools"), [("60", True), (None, False)])
async def test_a_503_cools_down_its_provider_only_with_retry_after(retry_after, cools):
    """A 503 with Retry-After cools the provider down; a plain 503 only fails its own fetch."""
    headers = {"Retry-After": retry_after} if retry_after else {}
    async with providers() as (slow, _), TokenManager(retry=RETRY) as tm:
        tm.register("s0", creds(slow, "s0"))
        tm.register("s1", creds(slow, "s1"))
        slow.inject(Fault(status=503, headers=headers), count=None)
        with pytest.raises(TokenEndpointUnavailable):
            await tm.get_token("s0")
        sent = slow.token_requests
        slow.clear_faults()
        if cools:
            with pytest.raises(TokenEndpointUnavailable) as info:
                await tm.get_token("s1")
            assert info.value.status_code == 503
            assert slow.token_requests == sent
        else:
            assert (await tm.get_token("s1")).access_token


async def test_a_short_cooldown_is_waited_out_by_the_other_tenants():
    """Tenants on a provider cooling down for 2 s wait for it to end, then get tokens; no
    request reaches the provider before the cooldown is over."""
    async with providers(tenants=3) as (slow, _), TokenManager(retry=RETRY) as tm:
        for n in range(3):
            tm.register(f"s{n}", creds(slow, f"s{n}"))
        slow.inject(Fault(status=429, headers={"Retry-After": "2"}))
        async with anyio.create_task_group() as tg:
            tg.start_soon(tm.get_token, "s0")
            origin = origin_of(slow.token_url)
            await wait_until(lambda: tm._rate_limits.remaining(origin) > 0)  # 429 read
            for n in (1, 2):
                tg.start_soon(tm.get_token, f"s{n}")
        first, *rest = slow.requests
        assert first.status == 429
        assert [r.status for r in rest] == [200, 200, 200]
        assert all(r.time - first.time >= 1.9 for r in rest)


def test_fetch_defaults_by_stack():
    """Defaults: 64 fetches (48 per provider) on httpx2 and aiohttp, 20 (15) on httpx."""
    from tokenflight._http import fetch_defaults

    assert fetch_defaults("httpx2", None, None, None)[:2] == (64, 48)
    assert fetch_defaults("aiohttp", None, None, None)[:2] == (64, 48)
    total, per_origin, limits = fetch_defaults("httpx", None, None, None)
    assert (total, per_origin, limits.max_connections) == (20, 15, 20)
    assert fetch_defaults("httpx", 8, 30, None)[:2] == (8, 8)  # never above the total
