"""Upkeep between token requests: when each slot is looked at again, and whether it is
then refreshed, left to lapse or evicted; how many background refreshes run at once.

Synchronous but for the scheduler's one task. The manager starts the flights; this
module decides when, and keeps the counters of slots that are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._config import RefreshPolicy
from ._hooks import EvictionReason, HookChain, SlotEvicted
from ._refresh_queue import RefreshQueue
from ._scheduler import RefreshScheduler
from ._settle import log_fields
from ._slot import Slot
from ._stats import KeyStatistics
from ._table import SlotTable

__all__ = ["Upkeep"]

logger = logging.getLogger("tokenflight")


class Upkeep:
    """The slots' timetable: refreshes, lapses and evictions.

    Args:
        start_refresh: Starts a background flight for a slot (the manager's).
        running: Whether flights may be started (the manager is open).
    """

    def __init__(
        self,
        table: SlotTable,
        refresh: RefreshPolicy,
        hooks: HookChain,
        clock: Callable[[], float],
        *,
        start_refresh: Callable[[Slot], object],
        running: Callable[[], bool],
    ) -> None:
        self._table = table
        self._refresh = refresh
        self._hooks = hooks
        self._start_refresh = start_refresh
        self._running = running
        self.retired = KeyStatistics()  # counters of slots gone, kept across runs
        self.evictions = 0
        self.restart(clock)

    def restart(self, clock: Callable[[], float]) -> None:
        """Start over on an event loop's clock: nothing queued, nothing refreshing."""
        self._clock = clock
        self.refreshing = 0
        self.queue = RefreshQueue()
        self.scheduler = RefreshScheduler(clock, self.on_due)

    def flight_started(self, slot: Slot, *, background: bool) -> None:
        if background:
            self.refreshing += 1
        self.scheduler.cancel(slot)  # the flight reschedules it when it lands
        self.queue.discard(slot)  # this flight brings the new token

    def flight_landed(self, slot: Slot, *, background: bool, settled: bool) -> None:
        if background:
            self.refreshing -= 1
            self._start_queued()
        if settled and not slot.evicted:
            self.scheduler.schedule(slot, slot.next_wakeup())

    def on_due(self, slot: Slot) -> None:
        """The scheduler's callback: evict, refresh, then plan the next look.

        Never waits (a refresh beyond the concurrency limit is queued), so one slow
        refresh cannot hold up the others' timing.
        """
        if slot.evicted or slot.flight is not None:
            return  # a running flight reschedules the slot when it lands
        now = self._clock()
        if now >= slot.idle_check_at:
            if slot.is_idle():
                if not slot.is_usable(now):
                    self.evict(slot)  # nothing worth keeping
                    return
                slot.lapsing = True  # never refreshed again; served until it expires
            else:
                slot.active_at = now
            slot.uses_at_idle_check = slot.uses()
            slot.idle_check_at = now + self._refresh.idle_timeout
        if slot.needs_refresh(now):
            if self.refreshing < self._refresh.max_concurrent:
                self._start_refresh(slot)
                return
            self.queue.push(slot)  # keeps refresh_at: checked again when it surfaces
            self.scheduler.schedule(slot, slot.idle_check_at)
            return
        if slot.refresh_at is not None and now >= slot.refresh_at:
            slot.refresh_at = None  # unused since it arrived, or idle: let it lapse
        self.scheduler.schedule(slot, slot.next_wakeup())

    def _start_queued(self) -> None:
        if not self._running():
            return
        while self.refreshing < self._refresh.max_concurrent:
            slot = self.queue.pop_due(self._clock())
            if slot is None:
                return
            self._start_refresh(slot)

    def shed(self, *, keep: Slot) -> None:
        """Over `max_slots`: evict the least recently used slots, idle ones first.

        About 1 % of the cap goes in one sweep, so that the pass over the table is paid
        once per hundreds of new slots, not on each.
        """
        cap = self._refresh.max_slots
        count = len(self._table) - cap + cap // 100
        for victim in self._table.least_recently_used(count, keep=keep):
            self.evict(victim, reason="max_slots")

    def evict(self, slot: Slot, *, counted: bool = True, reason: EvictionReason = "idle") -> None:
        slot.evicted = True
        slot.usable_until = 0.0
        self.scheduler.cancel(slot)
        self.queue.discard(slot)
        self.retired = self.retired + slot.counters()
        self.evictions += counted
        tenant = slot.key.tenant
        self._table.remove(slot)  # a resolved tenant leaves with its last slot
        logger.debug("evicted a slot of tenant %r (%s)", tenant, reason, extra=log_fields(slot))
        if self._hooks:
            self._hooks.slot_evicted(SlotEvicted(key=slot.key, reason=reason))

    def drop_tenant(self, tenant: str) -> None:
        for slot in self._table.of_tenant(tenant):
            self.evict(slot, counted=False, reason="tenant_dropped")

    def retire_all(self) -> None:
        """At shutdown: keep every slot's counters, then forget the slots."""
        for slot in self._table.unique():
            self.retired = self.retired + slot.counters()
        self._table.clear()
        self.queue.clear()
