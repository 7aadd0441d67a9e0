"""Admission: an authorized request waits for its turn before its token is read.

A request that reads its token and then queues for a connection spends its token's life
in the pool's queue; with short tokens it reaches the API with an expired one, gets a 401,
and its retry lengthens the queue further. So requests queue here first, in arrival order,
at most as many at once as the pool has connections, and read their token when admitted.
`RequestTimes` measures how long an admitted request then holds its token, so that a token
stops being handed out while it could still lapse on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

import anyio

from ._climb import Climb
from ._errors import ConfigurationError

__all__ = ["Admission", "AdmissionStatistics", "RequestTimes"]


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """A snapshot of an `Admission`.

    Attributes:
        limit: The most requests it ever admits at once (the pool's size).
        current_limit: How many it admits now (adapted, at most `limit`).
        admitted: Requests admitted and not yet answered.
        waiting: Requests waiting for their turn.
    """

    limit: int
    current_limit: int
    admitted: int
    waiting: int


@final
class Admission:
    """A bounded, first-in first-out gate for authorized requests.

    A request enters before its token is read and leaves when its response headers arrive
    (or it fails or is cancelled). Give one to several `auth()` objects that send through
    the same client so that together they never queue inside its connection pool:

    ```python
    gate = Admission(20)                      # the client's max_connections
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=20))
    auth_a = tokens.auth("acme", admission=gate)
    auth_b = tokens.auth("globex", admission=gate)
    ```

    `TokenManager.client()` makes a client whose pool and admission already match.

    While requests wait at the gate, it admits as many at once as get the most answers
    per second, up to `limit` (slow start, then hill climbing; see `current_limit` in
    `statistics()`): a slow remote API gets up to `limit` requests at once, a client whose
    own CPU is the bottleneck keeps fewer out and pays less for its connection pool.

    Args:
        limit: The most requests admitted at once: the pool's `max_connections`.
        adaptive: Find the best number within `limit` (default); False admits `limit`.

    Raises:
        ConfigurationError: `limit` is not a positive integer.
    """

    __slots__ = ("_climb", "_limit", "_limiter")

    def __init__(self, limit: int, *, adaptive: bool = True) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError(f"an Admission limit must be an integer >= 1, not {limit!r}")
        self._limit = limit
        self._climb = Climb(limit) if adaptive else None
        # anyio's limiter admits in arrival order, and its size can change while in use.
        self._limiter = anyio.CapacityLimiter(self._climb.current if self._climb else limit)

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<Admission limit={self._limit} current={stats.current_limit} "
            f"admitted={stats.admitted} waiting={stats.waiting}>"
        )

    @property
    def limit(self) -> int:
        """The most requests admitted at once."""
        return self._limit

    async def acquire(self) -> object:
        """Wait for a place (first come, first served); returns the ticket to release."""
        ticket = object()
        try:
            self._limiter.acquire_on_behalf_of_nowait(ticket)  # no checkpoint when free
        except anyio.WouldBlock:
            await self._limiter.acquire_on_behalf_of(ticket)
        return ticket

    def release(self, ticket: object, answered_at: float | None = None) -> None:
        """Give the place back; `answered_at`: the loop time its response arrived, if it did."""
        limiter = self._limiter
        limiter.release_on_behalf_of(ticket)
        climb = self._climb
        if climb is None or answered_at is None:
            return
        if climb.observe(answered_at, self._is_busy):
            limiter.total_tokens = climb.current

    def _is_busy(self) -> bool:
        return self._limiter.statistics().tasks_waiting > 0

    def statistics(self) -> AdmissionStatistics:
        """The bounds, and how many requests are admitted and waiting."""
        stats = self._limiter.statistics()
        return AdmissionStatistics(
            limit=self._limit,
            current_limit=int(stats.total_tokens),
            admitted=stats.borrowed_tokens,
            waiting=stats.tasks_waiting,
        )


@final
class RequestTimes:
    """A decaying high percentile of how long authorized requests hold their token.

    From the token's hand-out to the response headers: the token must outlive that. A
    stochastic quantile estimate on a log scale: each sample above the estimate raises
    it by `rate * q`, each one below lowers it by `rate * (1 - q)`, so it settles where a
    fraction `1 - q` of samples lie above, follows load up quickly and decays when it eases.
    """

    __slots__ = ("_down", "_up", "margin")

    def __init__(self, *, quantile: float = 0.99, rate: float = 0.1) -> None:
        self._up = 1.0 + rate * quantile
        self._down = 1.0 - rate * (1.0 - quantile)
        #: Seconds a token must still be valid for when it is handed to a request.
        self.margin = 0.0

    def observe(self, seconds: float) -> None:
        """Record one request's hand-out-to-response time."""
        margin = self.margin
        if seconds > margin:
            # Jumps up at most to the sample: one outlier moves it a step, not to the outlier.
            self.margin = min(seconds, margin * self._up) if margin else seconds
        else:
            self.margin = margin * self._down
