"""Unit tests of the per-origin fetch limiter and rate-limit cooldowns (no HTTP)."""

from __future__ import annotations

import anyio
import pytest

from helpers import wait_until
from tokenflight import RetryPolicy
from tokenflight._origins import FetchLimiter, RateLimits, origin_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://IdP.example.com/oauth/token", "https://idp.example.com:443"),
        ("https://idp.example.com:443/a", "https://idp.example.com:443"),
        ("https://idp.example.com:8443/a", "https://idp.example.com:8443"),
        ("http://127.0.0.1/token", "http://127.0.0.1:80"),
        ("http://[::1]:9000/token", "http://[::1]:9000"),
    ],
)
def test_origin_is_scheme_host_and_port(url, origin):
    """An origin is the lower-cased scheme://host:port, default ports written out."""
    assert origin_of(url) == origin


async def _hold(limiter: FetchLimiter, origin: str, order: list[str], release: anyio.Event):
    async with limiter.slot(origin):
        order.append(origin)
        await release.wait()


async def test_places_per_origin_are_capped():
    """One origin gets at most per_origin places, even while the total has room."""
    limiter = FetchLimiter(total=10, per_origin=3)
    order: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(_hold, limiter, "a", order, release)
        await wait_until(lambda: limiter.statistics().waiting == 2)
        assert limiter.in_flight("a") == 3
        tg.start_soon(_hold, limiter, "b", order, release)
        await wait_until(lambda: limiter.in_flight("b") == 1)  # b is not behind a's queue
        release.set()
    assert order == ["a", "a", "a", "b", "a", "a"]
    assert limiter.statistics().in_flight == 0
    assert limiter.statistics().in_flight_by_origin == {}


async def test_a_freed_place_goes_to_the_origin_holding_fewest():
    """With every place taken, a freed place goes to a waiting origin holding none, not to
    the origin that freed it and has a queue."""
    limiter = FetchLimiter(total=3, per_origin=3)
    order: list[str] = []
    held: list[anyio.Event] = []  # one per place taken, in the order they were taken

    async def hold(origin: str) -> None:
        async with limiter.slot(origin):
            order.append(origin)
            held.append(release := anyio.Event())
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(5):  # a holds all three places; two more of a wait
            tg.start_soon(hold, "a")
        await wait_until(lambda: limiter.statistics().waiting == 2)
        tg.start_soon(hold, "b")  # b arrives last
        await wait_until(lambda: limiter.statistics().waiting == 3)
        held[0].set()
        await wait_until(lambda: limiter.in_flight("b") == 1)
        assert limiter.in_flight("a") == 2
        while len(order) < 6:
            for event in held:
                event.set()
            await anyio.sleep(0.005)
        for event in held:
            event.set()
    assert order[:4] == ["a", "a", "a", "b"]


async def test_equal_origins_are_served_first_come_first_served():
    """Origins holding as many places are served in the order they started waiting."""
    limiter = FetchLimiter(total=1, per_origin=1)
    order: list[str] = []
    release = anyio.Event()
    first = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, limiter, "x", order, first)
        await wait_until(lambda: limiter.in_flight() == 1)
        for n, origin in enumerate(["c", "b", "d"], start=1):
            tg.start_soon(_hold, limiter, origin, order, release)
            await wait_until(lambda n=n: limiter.statistics().waiting == n)  # type: ignore[misc]
        first.set()
        release.set()
    assert order == ["x", "c", "b", "d"]


async def test_a_cancelled_wait_leaves_no_trace():
    """A fetch cancelled while waiting for a place is forgotten; the others go on."""
    limiter = FetchLimiter(total=1, per_origin=1)
    order: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, limiter, "a", order, release)
        await wait_until(lambda: limiter.in_flight() == 1)
        tg.start_soon(_hold, limiter, "b", order, release)
        await wait_until(lambda: limiter.statistics().waiting == 1)
        async with anyio.create_task_group() as inner:
            inner.start_soon(_hold, limiter, "c", order, release)
            await wait_until(lambda: limiter.statistics().waiting == 2)
            inner.cancel_scope.cancel()
        assert limiter.statistics().waiting == 1
        release.set()
    assert order == ["a", "b"]
    assert limiter.statistics().in_flight_by_origin == {}


async def test_a_place_granted_to_a_cancelled_waiter_is_given_back():
    """A waiter granted a place and cancelled before it runs gives the place back."""
    limiter = FetchLimiter(total=1, per_origin=1)
    order: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        await limiter.acquire("a")
        async with anyio.create_task_group() as inner:
            inner.start_soon(_hold, limiter, "b", order, release)
            await wait_until(lambda: limiter.statistics().waiting == 1)
            limiter.release("a")  # grants b's place ...
            inner.cancel_scope.cancel()  # ... and b is cancelled before it can run
        assert limiter.statistics().in_flight == 0
        tg.start_soon(_hold, limiter, "c", order, release)
        await wait_until(lambda: limiter.in_flight("c") == 1)
        release.set()
    assert "c" in order


def test_rate_limit_cooldown_counts_down_and_is_capped():
    """A noted cooldown counts down on the clock, keeps the longer of two, and is capped."""
    now = [100.0]
    limits = RateLimits(lambda: now[0], max_cooldown=60.0, default=1.0)
    origin = origin_of("https://idp.example.com/token")
    assert limits.remaining(origin) == 0.0
    assert limits.note("https://idp.example.com/token", 30.0) == 30.0
    assert limits.note("https://idp.example.com:443/other", 5.0) == 5.0  # shorter: kept 30
    now[0] += 10
    assert limits.remaining(origin) == pytest.approx(20.0)
    assert limits.status(origin) == 429
    assert 20.0 <= limits.jittered(origin) <= 22.0
    assert limits.note("https://idp.example.com/token", 86_400.0, status=503) == 60.0
    assert limits.status(origin) == 503
    assert limits.remaining("https://other.example.com:443") == 0.0
    now[0] += 61
    assert limits.remaining(origin) == 0.0
    assert limits.status(origin) is None


def test_a_429_without_retry_after_cools_down_for_the_default():
    """A 429 that does not say how long cools its origin down for the default."""
    limits = RateLimits(lambda: 0.0, max_cooldown=60.0, default=1.5)
    assert limits.note("https://idp.example.com/token", None) == 1.5
    assert limits.remaining("https://idp.example.com:443") == 1.5


def test_slot_cooldown_honours_retry_after_with_jitter_and_cap():
    """cooldown_for is at least Retry-After (up to 10 % more), never over max_cooldown."""
    policy = RetryPolicy(cooldown=1.0, max_cooldown=300.0)
    for _ in range(100):
        assert 60.0 <= policy.cooldown_for(1, permanent=False, retry_after=60.0) <= 66.0
    assert policy.cooldown_for(1, permanent=False, retry_after=86_400.0) == 300.0
    assert policy.cooldown_for(4, permanent=False, retry_after=0.5) == 8.0  # growing wins
    assert policy.cooldown_for(1, permanent=False, retry_after=None) == 1.0
