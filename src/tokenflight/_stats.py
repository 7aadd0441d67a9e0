"""Statistics snapshots: frozen values, cheap to take, safe to keep."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._slot import SlotKey

__all__ = ["KeyStatistics", "ManagerStatistics"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStatistics:
    """Counters of one slot key (or of all keys, in `ManagerStatistics.total`).

    Attributes:
        hits: Calls answered with the cached token.
        misses: Calls that found no usable token and started or joined a fetch.
        fetches: Token requests made for waiting callers (cold or expired slot).
        refreshes: Token requests made in the background before expiry.
        failures: Fetches and refreshes that failed.
        store_hits: Tokens taken from a shared store instead of the token endpoint.
        joins: Misses that joined a fetch already in flight (single flight at work).
        stale_served: Refreshes that failed while the current token stayed usable, so
            callers kept getting it (serve stale).
        expires_in: Seconds the current token stays valid (None: no token, or a total).
        refresh_at: When the token will be refreshed, on the event loop's clock
            (`anyio.current_time()`); None when no refresh is planned.
        last_error: The remembered failure, as "ErrorType: message" (never a secret);
            None after a success.
        cooldown_until: Until when that failure is raised without asking again, on the
            event loop's clock; None when not cooling down.
        last_fetch_latency: Seconds the last fetch of this key took, failed or not.
        fetch_latency_p50: The median of its last 16 fetches' latencies.

    The last six form a health view of a live key (in `ManagerStatistics.keys`, taken
    while the manager runs); they are None in `ManagerStatistics.total`.
    """

    hits: int = 0
    misses: int = 0
    fetches: int = 0
    refreshes: int = 0
    failures: int = 0
    store_hits: int = 0
    joins: int = 0
    stale_served: int = 0
    # The health view: moment-bound, so left out of `==` (which compares the counters).
    expires_in: float | None = field(default=None, compare=False)
    refresh_at: float | None = field(default=None, compare=False)
    last_error: str | None = field(default=None, compare=False)
    cooldown_until: float | None = field(default=None, compare=False)
    last_fetch_latency: float | None = field(default=None, compare=False)
    fetch_latency_p50: float | None = field(default=None, compare=False)

    def __add__(self, other: KeyStatistics) -> KeyStatistics:
        return KeyStatistics(
            hits=self.hits + other.hits,
            misses=self.misses + other.misses,
            fetches=self.fetches + other.fetches,
            refreshes=self.refreshes + other.refreshes,
            failures=self.failures + other.failures,
            store_hits=self.store_hits + other.store_hits,
            joins=self.joins + other.joins,
            stale_served=self.stale_served + other.stale_served,
        )


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerStatistics:
    """A snapshot of a `TokenManager`'s counters.

    Attributes:
        total: Sums over every key, including evicted ones.
        keys: Counters of each live slot key.
        slots: Live slots.
        tenants: Tenants with credentials (registered or resolved).
        evictions: Slots evicted: idle with no valid token, or over `RefreshPolicy.max_slots`.
        in_flight: Token requests in progress.
        admission_waiting: Authorized requests waiting at the manager's shared admission
            gate (the default of `auth()`) for their turn.
    """

    total: KeyStatistics
    keys: Mapping[SlotKey, KeyStatistics] = field(default_factory=dict)
    slots: int = 0
    tenants: int = 0
    evictions: int = 0
    in_flight: int = 0
    admission_waiting: int = 0
