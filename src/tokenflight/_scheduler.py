"""One background task that wakes slots when they are due: a heap of due times.

A constant number of tasks whatever the number of slots: 100,000 cached tenants cost heap
entries, not tasks. Each slot has at most one live entry (the newest); older entries are
recognised by their sequence number and dropped when they surface.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import anyio

from ._slot import Slot

__all__ = ["RefreshScheduler"]


class RefreshScheduler:
    """Calls `on_due(slot)` at (or soon after) the time each slot asked for."""

    def __init__(self, clock: Callable[[], float], on_due: Callable[[Slot], None]) -> None:
        self._clock = clock
        self._on_due = on_due
        self._heap: list[tuple[float, int, Slot]] = []
        self._seq = itertools.count()
        self._latest: dict[int, int] = {}
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return len(self._latest)

    def schedule(self, slot: Slot, when: float) -> None:
        """Ask for `on_due(slot)` at loop time `when`, replacing the slot's earlier request."""
        if math.isnan(when):
            return
        seq = next(self._seq)
        self._latest[id(slot)] = seq
        if self._heap and len(self._heap) > 4 * len(self._latest) + 64:
            self._compact()
        if not self._heap or when < self._heap[0][0]:
            self._wakeup.set()
        heapq.heappush(self._heap, (when, seq, slot))

    def cancel(self, slot: Slot) -> None:
        """Forget the slot's pending request (its heap entry goes stale)."""
        self._latest.pop(id(slot), None)

    def _compact(self) -> None:
        # Stale entries pile up when slots are rescheduled often; drop them in one pass.
        self._heap = [e for e in self._heap if self._latest.get(id(e[2])) == e[1]]
        heapq.heapify(self._heap)

    def _pop_due(self, now: float) -> Slot | None:
        while self._heap and self._heap[0][0] <= now:
            _, seq, slot = heapq.heappop(self._heap)
            if self._latest.get(id(slot)) == seq:
                del self._latest[id(slot)]
                return slot
        return None

    async def run(self) -> None:
        """Serve due slots until cancelled (by the manager's task group closing)."""
        while True:
            slot = self._pop_due(self._clock())
            if slot is not None:
                self._on_due(slot)
                continue
            self._wakeup = anyio.Event()
            delay = self._heap[0][0] - self._clock() if self._heap else math.inf
            with anyio.move_on_after(delay):
                await self._wakeup.wait()
