"""The refresh queue: background refreshes waiting for a place, at most one per slot.

Synchronous and I/O-free. A slot is queued when its refresh comes due while
`RefreshPolicy.max_concurrent` refreshes already run. Queuing a slot that is already
queued keeps its place, so the queue never holds more entries than there are slots.
An entry is checked again when it surfaces: a slot that was evicted, is being fetched,
or got a newer token meanwhile is dropped there, so a refresh never replaces a token
younger than its refresh point.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import final

from ._slot import Slot

__all__ = ["RefreshQueue"]


@final
class RefreshQueue:
    """Slots whose background refresh is due, first come first served, each at most once."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: OrderedDict[Slot, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, slot: Slot) -> bool:
        return slot in self._slots

    def push(self, slot: Slot) -> None:
        """Queue a slot; a slot already queued keeps its place."""
        self._slots.setdefault(slot, None)

    def discard(self, slot: Slot) -> None:
        """Take a slot out of the queue, if it is there."""
        self._slots.pop(slot, None)

    def pop_due(self, now: float) -> Slot | None:
        """The first queued slot that still needs a refresh at `now`, dropping stale ones."""
        while self._slots:
            slot, _ = self._slots.popitem(last=False)
            if slot.needs_refresh(now):
                return slot
        return None

    def clear(self) -> None:
        """Forget every entry."""
        self._slots.clear()
