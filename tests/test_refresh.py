"""Expiry, background refresh at a jittered fraction, and idle eviction."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
import trio.testing

from helpers import gather_tokens, wait_until
from tokenflight import ClientCredentials, RefreshPolicy, TokenManager
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-value-never-shown"


def creds(idp: IdentityProvider, client_id: str = "acme") -> ClientCredentials:
    return ClientCredentials(token_url=idp.token_url, client_id=client_id, client_secret=SECRET)


# -- expiry ----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [1, 50])
async def test_single_flight_at_expiry(keys):
    """After the tokens expire, 1,000 concurrent calls over N keys make exactly N requests."""
    async with IdentityProvider(token_lifetime=1) as idp, TokenManager() as tokens:
        for n in range(keys):
            idp.add_client(f"c{n}", SECRET)
            tokens.register(f"t{n}", creds(idp, f"c{n}"))
        names = [f"t{n % keys}" for n in range(1000)]
        first = await gather_tokens(tokens, names)
        assert idp.token_requests == keys
        latest = max(t.expires_at for t in first)
        await anyio.sleep(latest - anyio.current_time() + 0.01)
        # Nobody used the tokens after they arrived, so none was refreshed in the background.
        assert idp.token_requests == keys
        second = await gather_tokens(tokens, names)
        assert idp.token_requests == 2 * keys
        assert len({t.access_token for t in second}) == keys
        assert not {t.access_token for t in first} & {t.access_token for t in second}
        assert tokens.stats().total.fetches == 2 * keys
        assert tokens.stats().total.refreshes == 0


# -- background refresh ----------------------------------------------------------------


@pytest.mark.slow
async def test_background_refresh_under_load():
    """100 callers on 3 s tokens for 4 s: no 401, refreshes in the background, no new misses."""
    # Calls in flight are bounded before the auth flow runs (as in `tokenflight demo`): a
    # request queued inside httpx's pool holds a token read earlier, which could expire there.
    gate = anyio.Semaphore(10)
    async with (
        IdentityProvider(token_lifetime=3) as idp,
        TokenManager() as tokens,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=10)) as http,
    ):
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        auth = tokens.auth("acme")
        started = 0
        all_started = anyio.Event()
        statuses: list[int] = []

        async def worker() -> None:
            nonlocal started
            first = True
            while True:
                async with gate:
                    response = await http.get(idp.resource_url, auth=auth)
                statuses.append(response.status_code)
                if first:
                    first = False
                    started += 1
                    if started == 100:
                        all_started.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(worker)
                await all_started.wait()
                cold = tokens.stats().total
                await anyio.sleep(4.0)
                tg.cancel_scope.cancel()
        end = tokens.stats().total
    assert idp.resource_rejections == 0
    assert set(statuses) == {200}
    assert cold.fetches == 1
    assert 1 <= cold.misses <= 10
    assert end.fetches == 1
    assert end.misses == cold.misses  # nobody waited for a token request after the first
    assert end.refreshes >= 1
    assert end.hits > 500
    # Every token request was the first fetch or a refresh; one more refresh may still be
    # on its way when the workers stop (a loaded loop measures slower requests and
    # refreshes earlier).
    assert 1 + end.refreshes <= idp.token_requests <= 2 + end.refreshes


async def test_refresh_time_lies_in_the_jittered_window():
    """With fraction 0.5 and jitter 0.2 a used token is refreshed at 0.3-0.5 of its lifetime."""
    lifetime = 2.0
    policy = RefreshPolicy(fraction=0.5, jitter=0.2)
    async with IdentityProvider(token_lifetime=lifetime) as idp, TokenManager(refresh=policy) as t:
        idp.add_client("acme", SECRET)
        t.register("acme", creds(idp))
        first = await t.get_token("acme")
        await t.get_token("acme")  # used since it arrived: worth refreshing
        await wait_until(lambda: t.stats().total.refreshes == 1)
        assert await t.get_token("acme") is not first
        assert idp.token_requests == 2
    delta = idp.requests[1].time - idp.requests[0].time
    assert 0.3 * lifetime - 0.02 <= delta <= 0.5 * lifetime + 0.1


async def test_unused_token_is_not_refreshed():
    """A token nobody asked for after it arrived is left to lapse, not refreshed."""
    policy = RefreshPolicy(fraction=0.3, jitter=0.1)
    async with IdentityProvider(token_lifetime=1) as idp, TokenManager(refresh=policy) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        token = await tokens.get_token("acme")
        await anyio.sleep(token.expires_at - anyio.current_time() + 0.05)
        assert idp.token_requests == 1
        assert tokens.stats().total.refreshes == 0


# -- trio's MockClock: hour-long tokens in no time -------------------------------------


def mock_idp(lifetime: float) -> tuple[httpx.MockTransport, list[tuple[float, str]]]:
    """A token endpoint answering in memory, recording (loop time, client id) per request."""
    seen: list[tuple[float, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        client_id = request.headers["authorization"]
        seen.append((anyio.current_time(), client_id))
        body = {"access_token": f"tok-{len(seen)}", "token_type": "Bearer", "expires_in": lifetime}
        return httpx.Response(200, content=json.dumps(body).encode())

    return httpx.MockTransport(handler), seen


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_hour_long_token_refresh_timing_on_mock_clock():
    """On trio's MockClock, 3600 s tokens of 100 tenants refresh at jittered 0.7-0.8 lifetimes."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(fraction=0.8, jitter=0.1, idle_timeout=7200)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, refresh=policy) as tokens,
    ):
        for n in range(100):
            tokens.register(
                f"t{n}",
                ClientCredentials(
                    token_url="https://idp.example/token", client_id=f"c{n}", client_secret="x"
                ),
            )
        start = anyio.current_time()
        first = await gather_tokens(tokens, [f"t{n}" for n in range(100)])
        for n in range(100):
            await tokens.get_token(f"t{n}")  # used: worth refreshing
        await anyio.sleep(3000)
        assert len(seen) == 200
        assert tokens.stats().total.refreshes == 100
        refresh_times = [when - start for when, _ in seen[100:]]
        assert all(0.7 * 3600 <= t <= 0.8 * 3600 for t in refresh_times)
        assert max(refresh_times) - min(refresh_times) > 60  # jitter spreads them out
        old = {t.access_token for t in first}
        for n in range(100):
            assert (await tokens.get_token(f"t{n}")).access_token not in old
        assert tokens.stats().total.misses == 100  # nobody waited for the refreshes


# -- idle eviction ---------------------------------------------------------------------


async def test_idle_slot_is_not_refreshed_and_is_evicted():
    """With idle_timeout=0.5 an unused slot gets no more requests and is evicted."""
    policy = RefreshPolicy(idle_timeout=0.5, fraction=0.5, jitter=0.1)
    async with IdentityProvider(token_lifetime=1) as idp, TokenManager(refresh=policy) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        assert tokens.stats().slots == 1
        await wait_until(lambda: tokens.stats().slots == 0)
        stats = tokens.stats()
        assert stats.evictions == 1
        assert stats.total.misses == 1  # counters of evicted slots stay in the total
        assert idp.token_requests == 1
        # The tenant stays registered: the next call simply fetches again.
        await tokens.get_token("acme")
        assert idp.token_requests == 2
        assert tokens.stats().slots == 1


async def test_evicted_resolved_tenants_leave_nothing_behind():
    """200 resolver-made tenants leave no slot or key behind after the idle time."""
    policy = RefreshPolicy(idle_timeout=0.5)
    async with IdentityProvider(token_lifetime=60) as idp:
        idp.add_client("acme", SECRET)
        resolved: list[str] = []

        async def resolver(tenant: str) -> ClientCredentials:
            resolved.append(tenant)
            return creds(idp)

        async with TokenManager(resolver=resolver, refresh=policy) as tokens:
            await gather_tokens(tokens, [f"t{n}" for n in range(200)])
            await wait_until(lambda: tokens.stats().slots == 0)
            stats = tokens.stats()
            assert stats.evictions == 200
            assert stats.tenants == 0  # resolved tenants are forgotten with their slots
            assert not tokens._slots  # no key of an evicted slot stays behind (memory bound)
            # A tenant seen again comes back through the resolver, as a live slot.
            await tokens.get_token("t7")
            assert resolved.count("t7") == 2
            assert tokens.stats().slots == 1
            assert idp.token_requests == 201


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_cycling_through_many_tenants_keeps_memory_bounded():
    """2,000 tenants arriving 200 per second (mock clock) never hold more than a few waves."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(idle_timeout=2)

    async def resolver(tenant: str) -> ClientCredentials:
        return ClientCredentials(
            token_url="https://idp.example/token", client_id=tenant, client_secret="x"
        )

    peak = 0
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, resolver=resolver, refresh=policy) as tokens,
    ):
        for wave in range(10):
            await gather_tokens(tokens, [f"t{wave}-{n}" for n in range(200)])
            peak = max(peak, tokens.stats().slots)
            await anyio.sleep(1)
        await anyio.sleep(10)
        stats = tokens.stats()
        assert stats.slots == 0
        assert stats.evictions == 2000
        assert not tokens._slots
    assert len(seen) == 2000  # idle slots were never refreshed
    assert 200 <= peak <= 1000


async def test_slot_in_use_is_kept_and_refreshed():
    """A slot used more often than the idle timeout is refreshed and never evicted."""
    policy = RefreshPolicy(idle_timeout=0.3, fraction=0.5, jitter=0.1)
    async with IdentityProvider(token_lifetime=1) as idp, TokenManager(refresh=policy) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        with anyio.fail_after(5):
            while tokens.stats().total.refreshes < 2:
                await tokens.get_token("acme")
                await anyio.sleep(0.05)
        stats = tokens.stats()
        assert stats.evictions == 0
        assert stats.slots == 1
        assert stats.total.fetches == 1
        assert stats.total.misses == 1
