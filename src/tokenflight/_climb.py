"""How many requests to admit at once: the fewest that get the most answers per second.

Below the pool's size, admitting more requests helps while the API's latency is what
limits the rate (a remote API), and hurts once this process's CPU is the limit: the
requests then only wait, and httpcore 1.0's pool does work per connection on every
request. `Climb` finds the point by measuring: TCP's slow start (double while the rate
rises clearly), then hill climbing (as .NET's thread pool does): a step up or down per
epoch of answers, turning back when the rate falls. Pure bookkeeping, no I/O: the gate
feeds it the time of each answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

__all__ = ["Climb"]


@final
class Climb:
    """A concurrency limit in `[low, limit]` that follows the best answer rate."""

    __slots__ = (
        "_best",
        "_best_at",
        "_direction",
        "_done",
        "_limit",
        "_low",
        "_need",
        "_rate",
        "_slow_start",
        "_started",
        "_warm",
        "current",
    )

    GAIN = 1.30  # slow start goes on while doubling raises the rate by this much
    FALL = 0.90  # a rate below this share of the last one is a fall, not noise
    EPOCH = 24  # answers per measurement when climbing (slow start: `current`, at least 8)

    def __init__(self, limit: int, *, start: int = 4, low: int = 2) -> None:
        self._limit = limit
        self._low = min(low, limit)
        #: How many requests to admit now. Connections are opened on demand: start small.
        self.current = max(self._low, min(start, limit))
        self._slow_start = True
        self._direction = 1
        self._rate = 0.0
        self._best = 0.0  # the best rate since the last turn, and where it was
        self._best_at = self.current
        self._started: float | None = None
        self._warm = False
        self._done = 0
        self._need = 1  # answers that end this epoch (the first one starts the first)

    def observe(self, now: float, busy: Callable[[], bool]) -> bool:
        """Count one answer at loop time `now`; True when `current` changed.

        `busy()` says whether requests wait at the gate (asked at an epoch's end only): an
        epoch without waiting requests measured the demand, not what the API can serve,
        and is not judged.
        """
        self._done += 1
        if self._done < self._need:  # the hot path: one answer more in this epoch
            return False
        return self._end_epoch(now, busy)

    def _end_epoch(self, now: float, busy: Callable[[], bool]) -> bool:
        started, done = self._started, self._done
        self._started, self._done = now, 0
        if started is None:  # the first answer starts the first epoch, a warm-up
            self._warm = True
            self._plan()
            return False
        elapsed = now - started
        rate = done / elapsed if elapsed > 0 else 0.0
        changed = False
        if self._warm:  # the first requests carry the start-up burst: judge nothing
            self._warm = False
        elif rate <= 0.0 or not busy():
            self._rate = 0.0
        else:
            changed = self._step(rate)
        self._plan()
        return changed

    def _plan(self) -> None:
        epoch = self.current if self._slow_start else max(self.EPOCH, self.current)
        self._need = max(8, epoch)

    def _step(self, rate: float) -> bool:
        before, last = self.current, self._rate
        self._rate = rate
        if self._slow_start:
            if not last:
                return False  # the first judged epoch is the baseline of the first doubling
            if rate >= last * self.GAIN:
                self.current = self._clamp(before * 2)
                self._slow_start = self.current < self._limit
                return self.current != before
            self._slow_start = False  # doubling stopped paying: climb from half of it
            self.current = self._clamp(before // 2)
            self._rate = 0.0
            return self.current != before
        if rate > self._best:
            self._best, self._best_at = rate, before
        elif rate < self._best * self.FALL:
            # Worse than the best since the last turn (gradually or at once): go back
            # there and try the other way.
            self._direction = -self._direction
            start, self._best = self._best_at, 0.0
            self.current = self._clamp(start + self._direction)
            return self.current != before
        step = max(1, round(before / 5))
        self.current = self._clamp(before + self._direction * step)
        if self.current in (self._low, self._limit):
            self._direction = 1 if self.current == self._low else -1
        return self.current != before

    def _clamp(self, value: int) -> int:
        return min(self._limit, max(self._low, value))
