"""Expiry, background refresh at a jittered fraction, idle slots and the max_slots cap."""

from __future__ import annotations

import collections
import json

import anyio
import httpx
import pytest
import trio.testing

from helpers import Recorder, creds, gather_tokens, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    FetchStarted,
    RefreshPolicy,
    SlotKey,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-value-never-shown"


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
                    token_url="https://idp.example/token",
                    client_id=f"c{n}",
                    auth=ClientSecretBasic("x"),
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


# -- idle slots and the max_slots cap --------------------------------------------------


def mock_clock() -> pytest.MarkDecorator:
    """Run a test on trio only, with a fresh MockClock that jumps whenever all tasks wait."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    return pytest.mark.parametrize("anyio_backend", [("trio", {"clock": clock})])


def mock_creds(client_id: str) -> ClientCredentials:
    return ClientCredentials(
        token_url="https://idp.example/token", client_id=client_id, auth=ClientSecretBasic("x")
    )


async def test_idle_slot_keeps_serving_its_valid_token():
    """Two calls with an idle check between them cost one token request, not two."""
    policy = RefreshPolicy(idle_timeout=0.2)
    async with IdentityProvider(token_lifetime=3600) as idp, TokenManager(refresh=policy) as t:
        idp.add_client("acme", SECRET)
        t.register("acme", creds(idp))
        first = await t.get_token("acme")
        slot = t._slots[next(iter(t._slots))]
        await wait_until(lambda: slot.lapsing)  # an idle check found nobody asking
        assert await t.get_token("acme") is first
        assert idp.token_requests == 1
        assert t.stats().slots == 1
        assert t.stats().evictions == 0


async def test_idle_slot_is_not_refreshed_and_is_evicted():
    """With idle_timeout=0.5 an unused slot gets no more requests and is evicted once its
    token has expired."""
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


@mock_clock()
async def test_evicted_resolved_tenants_leave_nothing_behind():
    """200 resolver-made tenants leave no slot or key behind once idle and expired (on a
    mock clock with the endpoint in memory: 1-second tokens on a loaded machine expired
    before they could be handed out)."""
    transport, seen = mock_idp(60)
    policy = RefreshPolicy(idle_timeout=30)
    resolved: list[str] = []

    async def resolver(tenant: str) -> ClientCredentials:
        resolved.append(tenant)
        return mock_creds(tenant)

    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, resolver=resolver, refresh=policy) as tokens,
    ):
        await gather_tokens(tokens, [f"t{n}" for n in range(200)])
        await anyio.sleep(200)  # past the tokens' 60 s and the idle checks after it
        stats = tokens.stats()
        assert (stats.slots, stats.evictions) == (0, 200)
        assert stats.tenants == 0  # resolved tenants are forgotten with their slots
        assert not tokens._slots  # no key of an evicted slot stays behind (memory bound)
        # A tenant seen again comes back through the resolver, as a live slot.
        await tokens.get_token("t7")
        assert resolved.count("t7") == 2
        assert tokens.stats().slots == 1
        assert len(seen) == 201


@mock_clock()
async def test_idle_slot_is_not_refreshed_but_served_until_it_expires():
    """On a mock clock: a used slot found idle is not refreshed at its refresh point, its
    token is handed out until it expires, and the slot goes at the next idle check."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(idle_timeout=900, fraction=0.8, jitter=0.0, leeway=10)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, refresh=policy) as tokens,
    ):
        tokens.register("acme", mock_creds("acme"))
        first = await tokens.get_token("acme")
        await tokens.get_token("acme")  # used since it arrived
        await anyio.sleep(1000)  # one idle check found nobody asking
        for pause in (900, 1050, 550):  # then calls again, up to past the refresh point
            await anyio.sleep(pause)
            assert await tokens.get_token("acme") is first
        assert anyio.current_time() > 2880  # the refresh point, lifetime * fraction
        assert len(seen) == 1
        assert tokens.stats().total.refreshes == 0
        await anyio.sleep(first.expires_at - anyio.current_time() + 1)
        # Expired: the next call fetches (the slot may be gone or not yet).
        assert await tokens.get_token("acme") is not first
        assert len(seen) == 2
        await anyio.sleep(3 * 3600)
        assert tokens.stats().slots == 0
        assert tokens.stats().evictions == 1


@mock_clock()
async def test_busy_slot_is_still_refreshed_ahead():
    """A slot asked for within every idle period is refreshed before its token expires."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(idle_timeout=900, fraction=0.8, jitter=0.0)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, refresh=policy) as tokens,
    ):
        tokens.register("acme", mock_creds("acme"))
        for _ in range(3 * 3600 // 300):
            await tokens.get_token("acme")
            await anyio.sleep(300)
        stats = tokens.stats().total
        assert stats.fetches == 1
        assert stats.misses == 1  # nobody ever waited after the first call
        assert stats.refreshes == len(seen) - 1 >= 3


@mock_clock()
async def test_cycling_through_many_tenants_keeps_memory_bounded():
    """2,000 tenants arriving 200 per second (mock clock) never hold more than max_slots."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(idle_timeout=2, max_slots=500)

    async def resolver(tenant: str) -> ClientCredentials:
        return mock_creds(tenant)

    peak = 0
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, resolver=resolver, refresh=policy) as tokens,
    ):
        for wave in range(10):
            await gather_tokens(tokens, [f"t{wave}-{n}" for n in range(200)])
            peak = max(peak, tokens.stats().slots)
            assert tokens.stats().tenants == tokens.stats().slots  # resolved ones leave too
            await anyio.sleep(1)
        assert peak == 500
        assert tokens.stats().evictions == 1500
        assert tokens.stats().total.misses == 2000  # evicted slots' counters are kept
        await anyio.sleep(3700)  # every token expired: idle slots go
        stats = tokens.stats()
        assert stats.slots == 0
        assert stats.evictions == 2000
        assert not tokens._slots
    assert len(seen) == 2000  # idle slots were never refreshed


@mock_clock()
async def test_cap_evicts_the_least_recently_used_idle_slot():
    """Over max_slots, the slot nobody asked for since the last idle check goes first."""
    transport, seen = mock_idp(3600)
    policy = RefreshPolicy(idle_timeout=10, max_slots=3)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TokenManager(http_client=http, refresh=policy) as tokens,
    ):
        for name in "abcd":
            tokens.register(name, mock_creds(name))
        for name in "abc":
            await tokens.get_token(name)
        await anyio.sleep(15)  # the first idle check (at 10 s) saw all three asked for
        await tokens.get_token("a")
        await anyio.sleep(10)  # the second saw "a" asked for again, "b" and "c" idle
        await tokens.get_token("b")  # asked for since that check: recent
        await tokens.get_token("d")
        live = {key.tenant for key in tokens.stats().keys}
        assert live == {"a", "b", "d"}
        assert tokens.stats().evictions == 1
        assert tokens.stats().tenants == 4  # registered tenants stay registered
        assert len(seen) == 4


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


# -- the refresh queue ------------------------------------------------------------------


class RefreshAges(Recorder):
    """At each background fetch's start, the age of the token it replaces (the manager's
    clock: the IdP's receipt times drift from it under load), and the start time."""

    def __init__(self, lifetime: float) -> None:
        super().__init__()
        self.tokens: TokenManager | None = None
        self.lifetime = lifetime
        self.starts: list[tuple[SlotKey, float, float]] = []  # key, loop time, token age

    def fetch_started(self, event: FetchStarted) -> None:
        if event.background and self.tokens is not None:
            left = self.tokens.stats().keys[event.key].expires_in
            assert left is not None  # a refresh replaces a token
            self.starts.append((event.key, anyio.current_time(), self.lifetime - left))


async def test_backed_up_refreshes_cost_one_request_per_slot_per_round():
    """With max_concurrent=1 and 30 slots due together: one queued refresh per slot at most,
    none of a token younger than its refresh point, none after the slot's last use but the
    one already due."""
    slots, rounds, lifetime, fraction = 30, 3, 2.0, 0.5
    policy = RefreshPolicy(fraction=fraction, jitter=0.0, max_concurrent=1)
    names = [f"t{n}" for n in range(slots)]
    peak_queue = 0
    ages = RefreshAges(lifetime)
    async with (
        # 30 refreshes one at a time take longer than a token's refresh point to expiry:
        # some tokens expire while queued and callers fetch them first.
        IdentityProvider(token_lifetime=lifetime, latency=0.05) as idp,
        TokenManager(refresh=policy, instrumentation=ages) as tokens,
    ):
        ages.tokens = tokens
        for n in range(slots):
            idp.add_client(f"c{n}", SECRET)
            tokens.register(f"t{n}", creds(idp, f"c{n}"))

        def every_slot_did_its_rounds() -> bool:
            return all(idp.token_requests_for(f"c{n}") >= rounds for n in range(slots))

        with anyio.fail_after(30):
            while not every_slot_did_its_rounds():
                await gather_tokens(tokens, names)  # every slot in use
                peak_queue = max(peak_queue, len(tokens._upkeep.queue))
                await anyio.sleep(0.02)
            stopped = anyio.current_time()
            # Unused from now on: a token that arrives now is never refreshed; let the
            # refreshes of tokens used before settle.
            await wait_until(lambda: tokens.stats().in_flight == 0, timeout=10)
            await anyio.sleep(lifetime)
            await wait_until(lambda: tokens.stats().in_flight == 0, timeout=10)
        stats = tokens.stats().total
    assert peak_queue <= slots
    assert idp.token_requests == stats.fetches + stats.refreshes
    assert stats.refreshes == len(ages.starts) > 0
    # The token's lifetime counts from before its request was sent (a few ms slack for
    # the clock reads on either side of the fetch).
    assert min(age for _, _, age in ages.starts) >= fraction * lifetime - 0.01
    after = collections.Counter(key for key, when, _ in ages.starts if when > stopped)
    assert max(after.values(), default=0) <= 1
