"""The refresh queue and the slot table's eviction order, without I/O."""

from __future__ import annotations

from tokenflight import ClientCredentials, ClientSecretBasic, Token
from tokenflight._refresh_queue import RefreshQueue
from tokenflight._slot import Slot, SlotKey, TokenFlight
from tokenflight._table import SlotTable

CREDS = ClientCredentials(
    token_url="https://idp.example/token", client_id="c", auth=ClientSecretBasic("s")
)


def due_slot(table: SlotTable, tenant: str, *, refresh_at: float = 10.0) -> Slot:
    """A slot holding a token that was used since it arrived, due for refresh at 10."""
    slot, _ = table.add(SlotKey(tenant, None, None, None), CREDS)
    slot.token = Token(
        access_token=f"tok-{tenant}", expires_in=20.0, obtained_at=0.0, expires_at=20.0
    )
    slot.usable_until = 19.0
    slot.refresh_at = refresh_at
    slot.hits = 1  # used since the token arrived (uses_at_fetch is 0)
    return slot


def test_a_slot_is_queued_at_most_once_and_keeps_its_place():
    """Pushing queued slots again and again never grows the queue beyond its slots."""
    table = SlotTable()
    a, b = due_slot(table, "a"), due_slot(table, "b")
    queue = RefreshQueue()
    for _ in range(1000):
        queue.push(a)
        queue.push(b)
    assert len(queue) == 2
    assert queue.pop_due(10.0) is a
    assert queue.pop_due(10.0) is b
    assert queue.pop_due(10.0) is None
    assert len(queue) == 0


def test_stale_entries_are_dropped_when_they_surface():
    """Evicted, in-flight, idle, unused and freshly refreshed slots are skipped, and gone."""
    table = SlotTable()
    evicted, flying, lapsing, unused, fresh, due = (
        due_slot(table, name) for name in ("evicted", "flying", "lapsing", "unused", "fresh", "due")
    )
    evicted.evicted = True
    flying.flight = TokenFlight(background=False)
    lapsing.lapsing = True
    unused.uses_at_fetch = unused.uses()
    fresh.refresh_at = 15.0  # a newer token arrived meanwhile: not past its refresh point
    queue = RefreshQueue()
    for slot in (evicted, flying, lapsing, unused, fresh, due):
        queue.push(slot)
    assert queue.pop_due(10.0) is due
    assert len(queue) == 0


def test_a_token_younger_than_its_refresh_point_is_never_refreshed():
    """A queued slot surfaces only once `now` has reached its refresh point."""
    table = SlotTable()
    slot = due_slot(table, "a", refresh_at=10.0)
    queue = RefreshQueue()
    queue.push(slot)
    assert queue.pop_due(9.99) is None
    queue.push(slot)
    assert queue.pop_due(10.0) is slot


def test_discard_and_clear_forget_entries():
    """A discarded slot does not surface; clear() empties the queue."""
    table = SlotTable()
    a, b = due_slot(table, "a"), due_slot(table, "b")
    queue = RefreshQueue()
    queue.push(a)
    queue.push(b)
    queue.discard(a)
    queue.discard(a)  # not there any more: ignored
    assert a not in queue
    assert b in queue
    queue.clear()
    assert queue.pop_due(10.0) is None


def test_first_due_first_served():
    """Slots leave the queue in the order they came due."""
    table = SlotTable()
    slots = [due_slot(table, f"t{n}") for n in range(5)]
    queue = RefreshQueue()
    for slot in reversed(slots):
        queue.push(slot)
    assert [queue.pop_due(10.0) for _ in slots] == list(reversed(slots))


# -- the table's eviction order (the max_slots cap) ---------------------------------------


def test_table_counts_slots_not_spellings():
    """len() counts each slot once, whatever its aliases, and follows add/remove/clear."""
    table = SlotTable()
    a, _ = table.add(SlotKey("a", None, None, None), CREDS)
    table.add(SlotKey("a", None, None, frozenset()), CREDS)  # the same slot, written out
    table.add(SlotKey("b", None, None, None), CREDS)
    assert len(table) == 2
    table.remove(a)
    table.remove(a)  # already gone: not counted twice
    assert len(table) == 1
    table.clear()
    assert len(table) == 0


def test_least_recently_used_puts_idle_slots_first():
    """Idle slots go first, oldest activity first; in-flight and kept slots never go."""
    table = SlotTable()
    busy_old, idle_new, idle_old, flying, kept = (
        due_slot(table, name) for name in ("busy_old", "idle_new", "idle_old", "flying", "kept")
    )
    for slot in (busy_old, idle_new, idle_old, flying, kept):
        slot.uses_at_idle_check = slot.uses()  # nobody asked since the last idle check
    busy_old.hits += 1  # ...except this one, asked for since
    busy_old.active_at = 1.0
    idle_old.active_at = 2.0
    idle_new.active_at = 3.0
    flying.active_at = kept.active_at = 0.0
    flying.flight = TokenFlight(background=True)
    assert table.least_recently_used(2, keep=kept) == [idle_old, idle_new]
    assert table.least_recently_used(10, keep=kept) == [idle_old, idle_new, busy_old]
