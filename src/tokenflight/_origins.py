"""Fetch limits per identity provider: concurrency fair across origins, and rate-limit cooldowns.

An origin is a token endpoint's `scheme://host:port`: one identity provider, however many
tenants it serves. Two things are tracked per origin, without I/O:

- `FetchLimiter`: token requests in flight, at most `total` overall and `per_origin` for
  each origin. A free place goes to the waiting origin with the fewest requests in flight
  (first come, first served among equals), so a slow provider holding its own places
  cannot make the tenants of another provider queue behind its tenants.
- `RateLimits`: until when an origin asked not to be called (a 429, or a 503 with
  `Retry-After`), so that every tenant on it holds back, not only the one that was told.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel

__all__ = ["FetchLimiter", "FetchLimiterStatistics", "RateLimits", "RequestPace", "origin_of"]

#: A cooldown ends for each waiting fetch at a random point up to this fraction later, so
#: the tenants that a provider held back do not all come back in the same instant.
COOLDOWN_JITTER = 0.1

#: Cooldowns kept before the lapsed ones are swept.
MAX_ORIGINS = 10_000

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """The `scheme://host:port` of a URL, with the default port written out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port out of range: the URL's own spelling is its identity
        return f"{scheme}://{parts.netloc.lower()}"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchLimiterStatistics:
    """A snapshot of a `FetchLimiter`.

    Attributes:
        in_flight: Places taken, overall.
        waiting: Fetches waiting for a place, overall.
        in_flight_by_origin: Places taken, per origin that holds any.
    """

    in_flight: int
    waiting: int
    in_flight_by_origin: dict[str, int]


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class _Origin:
    __slots__ = ("active", "waiters")

    def __init__(self) -> None:
        self.active = 0
        self.waiters: deque[_Waiter] = deque()


class FetchLimiter:
    """At most `total` places overall and `per_origin` per origin, shared out fairly.

    Origins that wait for a place are kept in buckets by how many places they hold; a
    freed place goes to the first origin of the lowest bucket, that origin's longest
    waiting fetch first. Deciding is synchronous and costs O(per_origin) per place.
    """

    def __init__(self, total: int, per_origin: int) -> None:
        self._total = total
        self._per_origin = min(per_origin, total)
        self._active = 0
        self._waiting = 0
        self._origins: dict[str, _Origin] = {}
        # _ready[n]: origins with waiters holding n places (n < per_origin), oldest first.
        self._ready: list[dict[str, None]] = [{} for _ in range(self._per_origin)]

    @asynccontextmanager
    async def slot(self, origin: str) -> AsyncIterator[None]:
        """Hold one place for `origin` while the block runs (waiting for it if need be)."""
        await self.acquire(origin)
        try:
            yield
        finally:
            self.release(origin)

    async def acquire_before(self, origin: str, deadline: float) -> bool:
        """Wait for a place for `origin` until the loop time `deadline`; whether one was had.

        A place is held only when this returns True; give it back with `release()`.
        """
        with anyio.CancelScope(deadline=deadline):
            await self.acquire(origin)
            return True
        return False

    async def acquire(self, origin: str) -> None:
        """Wait for a place for `origin`. A cancelled wait leaves no trace."""
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = _Origin()
        if not state.waiters and state.active < self._per_origin and self._active < self._total:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._grant(state)
            await anyio.lowlevel.cancel_shielded_checkpoint()  # a place taken is never lost
            return
        waiter = _Waiter()
        state.waiters.append(waiter)
        self._waiting += 1
        if state.active < self._per_origin and len(state.waiters) == 1:
            self._ready[state.active][origin] = None
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # granted and cancelled at once: give the place back
                self.release(origin)
            else:
                self._withdraw(origin, state, waiter)
            raise

    def release(self, origin: str) -> None:
        """Give back a place taken for `origin`, and hand out what is free."""
        state = self._origins[origin]
        if state.waiters and state.active < self._per_origin:
            del self._ready[state.active][origin]
        state.active -= 1
        self._active -= 1
        if state.waiters:
            self._ready[state.active][origin] = None
        elif not state.active:
            del self._origins[origin]
        self._dispatch()

    @property
    def per_origin(self) -> int:
        """The most places one origin holds at once."""
        return self._per_origin

    def in_flight(self, origin: str | None = None) -> int:
        """Places taken, overall or by one origin."""
        if origin is None:
            return self._active
        state = self._origins.get(origin)
        return 0 if state is None else state.active

    def statistics(self) -> FetchLimiterStatistics:
        """A snapshot of places taken and fetches waiting."""
        return FetchLimiterStatistics(
            in_flight=self._active,
            waiting=self._waiting,
            in_flight_by_origin={o: s.active for o, s in self._origins.items() if s.active},
        )

    def _grant(self, state: _Origin) -> None:
        state.active += 1
        self._active += 1

    def _dispatch(self) -> None:
        """Hand free places to waiting origins, fewest places held first."""
        while self._active < self._total:
            bucket = next((b for b in self._ready if b), None)
            if bucket is None:
                return
            origin = next(iter(bucket))
            del bucket[origin]
            state = self._origins[origin]
            waiter = state.waiters.popleft()
            self._waiting -= 1
            waiter.granted = True
            waiter.event.set()
            self._grant(state)
            if state.waiters and state.active < self._per_origin:
                self._ready[state.active][origin] = None

    def _withdraw(self, origin: str, state: _Origin, waiter: _Waiter) -> None:
        state.waiters.remove(waiter)
        self._waiting -= 1
        if not state.waiters:
            if state.active < self._per_origin:
                del self._ready[state.active][origin]
            if not state.active:
                del self._origins[origin]


class RateLimits:
    """Until when each origin asked not to be called (429, or 503 with `Retry-After`).

    Args:
        clock: The event loop's clock.
        max_cooldown: The longest cooldown accepted; a longer `Retry-After` is capped.
        default: The cooldown of a 429 that does not say how long.
    """

    def __init__(self, clock: Callable[[], float], *, max_cooldown: float, default: float) -> None:
        self._clock = clock
        self._max = max_cooldown
        self._default = default
        self._until: dict[str, float] = {}
        self._status: dict[str, int] = {}

    def note(self, url: str, retry_after: float | None, *, status: int = 429) -> float:
        """Cool down the origin of `url` for `retry_after` seconds (capped); returns them."""
        seconds = min(self._max, self._default if retry_after is None else retry_after)
        if seconds <= 0:
            return 0.0
        origin = origin_of(url)
        now = self._clock()
        if len(self._until) >= MAX_ORIGINS:  # many providers: forget the lapsed ones
            self._until = {o: t for o, t in self._until.items() if t > now}
            self._status = {o: c for o, c in self._status.items() if o in self._until}
        until = now + seconds
        if until > self._until.get(origin, 0.0):
            self._until[origin] = until
            self._status[origin] = status
        return seconds

    def remaining(self, origin: str) -> float:
        """Seconds left of the origin's cooldown (0 when it is not cooling down)."""
        until = self._until.get(origin)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[origin]
            self._status.pop(origin, None)
            return 0.0
        return left

    def status(self, origin: str) -> int | None:
        """The HTTP status (429 or 503) that started the origin's cooldown, if any."""
        return self._status.get(origin) if self.remaining(origin) else None

    def jittered(self, origin: str) -> float:
        """`remaining()`, plus up to `COOLDOWN_JITTER` of it at random (0 stays 0)."""
        left = self.remaining(origin)
        return left + random.uniform(0, COOLDOWN_JITTER * left) if left else 0.0


class RequestPace:
    """At most `per_second` token requests per second to each origin, retries included.

    A generic cell rate algorithm (a token bucket kept as one time per origin): a burst
    of up to a second's worth goes at once, then requests are spaced `1 / per_second`
    apart. Reserving is synchronous; the caller sleeps the returned wait. A reservation
    that is not used (its fetch was cancelled) is not given back, which errs on the side
    of the provider's limit.
    """

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self._interval = 1.0 / per_second
        self._burst = max(1.0, per_second) * self._interval  # seconds of credit
        self._clock = clock
        self._next: dict[str, float] = {}  # origin -> its theoretical next arrival

    def reserve(self, origin: str) -> float:
        """Take the origin's next place in time; the seconds to wait before sending."""
        now = self._clock()
        if len(self._next) >= MAX_ORIGINS:  # many providers: forget the idle ones
            self._next = {o: t for o, t in self._next.items() if t > now}
        arrival = max(self._next.get(origin, now), now)
        self._next[origin] = arrival + self._interval
        return max(0.0, arrival + self._interval - self._burst - now)

    async def wait(self, origin: str) -> None:
        """Wait for the origin's next place in time."""
        delay = self.reserve(origin)
        if delay > 0:
            await anyio.sleep(delay)
