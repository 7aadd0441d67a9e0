"""A slot: the token, refresh plan and failure memory of one (tenant, audience, scopes) key.

A slot's state changes only in synchronous code: on one event loop, code with no `await`
cannot be interleaved, so "is a fetch in flight? if not, start one" is atomic without a
lock. Waiters wait on the flight's `done` event and then read its outcome.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ._config import ClientCredentials, RefreshPolicy, RetryPolicy
from ._dpop import DPoPProver
from ._endpoint import TokenRequest
from ._errors import TokenError
from ._flight import Flight
from ._stats import KeyStatistics
from ._token import Token

__all__ = ["LookupKey", "Slot", "SlotKey", "TokenFlight"]


class SlotKey(NamedTuple):
    """What a token is for: a tenant, an audience or resource, and a set of scopes.

    `scopes` is None when the caller asked for the tenant's default scopes.
    """

    tenant: str
    audience: str | None
    resource: str | tuple[str, ...] | None
    scopes: frozenset[str] | None


#: A `SlotKey` as a plain tuple, which hashes and compares the same: what callers look
#: slots up by (the garbage collector stops tracking a tuple of strings; not a SlotKey).
LookupKey = tuple[str, str | None, str | tuple[str, ...] | None, frozenset[str] | None]


class TokenFlight(Flight[Token]):
    """One token request in progress, shared by every caller that waits for it."""

    __slots__ = ("background", "fetch_id", "from_store", "started_at")

    def __init__(self, *, background: bool, started_at: float = 0.0, fetch_id: int = 0) -> None:
        super().__init__()
        self.background = background
        self.from_store = False
        self.started_at = started_at  # the event loop's clock, for the fetch's duration
        self.fetch_id = fetch_id  # tells instrumentation's concurrent fetches apart


@dataclass(slots=True, eq=False)
class Slot:
    """Mutable state of one key. Owned by the manager; never shared across event loops."""

    key: SlotKey
    creds: ClientCredentials
    request: TokenRequest
    token: Token | None = None
    # The token is usable until this loop time (expiry minus leeway); 0 when there is none.
    usable_until: float = 0.0
    refresh_at: float | None = None
    # Use counts (hits + misses) when the token arrived and at the last idle check.
    uses_at_fetch: int = 0
    uses_at_idle_check: int = 0
    idle_check_at: float = 0.0
    # Loop time of the last idle check that found the slot used (or of its creation): the
    # approximate recency that the max_slots cap evicts by, kept off the hot path.
    active_at: float = 0.0
    # Found idle during this token's life: not refreshed again, but served until it
    # expires (tokens cost money). Cleared when a new token arrives.
    lapsing: bool = False
    flight: TokenFlight | None = None
    failure: TokenError | None = None
    failures: int = 0
    retry_at: float = 0.0
    evicted: bool = False
    hits: int = 0
    misses: int = 0
    fetches: int = 0
    refreshes: int = 0
    failure_count: int = 0
    store_hits: int = 0
    joins: int = 0
    stale_served: int = 0
    # Every key spelling that maps to this slot (defaults omitted or written out).
    aliases: list[SlotKey] = field(default_factory=list)
    # With an issuer: the loop time the metadata behind the discovered `creds` expires.
    discovered_until: float = 0.0
    # The slot's DPoP key pair, made on its first fetch when the credentials ask for DPoP.
    dpop: DPoPProver | None = None
    # The token last rejected by an API (a 401), until a new one arrives: a shared store
    # must not hand it back.
    rejected: Token | None = None
    # Tokens rejected in a row, and until when a rejection no longer drops the token.
    rejections: int = 0
    last_rejection: float = float("-inf")
    rejections_ignored_until: float = 0.0
    # Seconds the last fetch took (the health view in stats()).
    last_latency: float | None = None
    # The last few fetch latencies, for the health view's median.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=16))

    def is_usable(self, now: float, min_ttl: float = 0.0) -> bool:
        """Whether the current token may be handed out for at least `min_ttl` more seconds."""
        return self.token is not None and now + min_ttl < self.usable_until

    def is_cooling_down(self, now: float) -> bool:
        """Whether a remembered failure should be raised instead of asking the IdP again."""
        return self.failure is not None and now < self.retry_at

    def uses(self) -> int:
        """Calls that asked for this slot so far."""
        return self.hits + self.misses

    def is_idle(self) -> bool:
        """Whether nobody asked for this slot since the last idle check."""
        return self.flight is None and self.uses() == self.uses_at_idle_check

    def was_used_since_fetch(self) -> bool:
        """Whether anybody asked for the token since it arrived (worth refreshing it)."""
        return self.token is not None and self.uses() > self.uses_at_fetch

    def needs_refresh(self, now: float) -> bool:
        """Whether a background refresh is due now and worth its token request.

        Only for a live slot with no fetch running, whose token was asked for since it
        arrived, is past its refresh point, and was never found idle during its life.
        """
        return (
            not self.evicted
            and not self.lapsing
            and self.flight is None
            and self.refresh_at is not None
            and now >= self.refresh_at
            and self.was_used_since_fetch()
        )

    def recency(self) -> tuple[bool, float]:
        """A sort key, least recently used first: idle since the last check, then by
        when the last check found it used (the hot path only counts uses)."""
        return (self.uses() != self.uses_at_idle_check, self.active_at)

    def next_wakeup(self) -> float:
        """When the scheduler should look at this slot next."""
        when = self.idle_check_at
        if self.refresh_at is not None:
            when = min(when, self.refresh_at)
        return when

    def capped_ttl(self, min_ttl: float) -> float:
        """`min_ttl`, capped to half of what a new token of this slot would give.

        Asking more than a token can ever hold would otherwise fetch on every call.
        """
        token = self.token
        if token is None or not min_ttl:
            return min_ttl
        return min(min_ttl, (self.usable_until - token.obtained_at) / 2)

    def take_token(
        self, token: Token, policy: RefreshPolicy, *, margin: float, now: float
    ) -> Token:
        """Adopt a fetched token and plan its refresh; returns the token to hand out.

        `margin` is how long authorized requests need a token to stay valid: refresh
        ahead of the point where they stop taking it (by as long as this fetch took), so
        that none of them waits.
        """
        old = self.token
        self.rejected = None
        self.failure = None
        self.failures = 0
        self.uses_at_fetch = self.uses()
        self.lapsing = False
        if old is not None and token.access_token == old.access_token:
            # The server handed back the token it issued before: keep the original expiry
            # and do not ask again early (that would loop). Asked again inside the leeway,
            # the server insists: use the token until it really expires.
            if now >= self.usable_until:
                self.usable_until = old.expires_at
            self.refresh_at = None
            return old
        self.token = token
        self.usable_until = token.expires_at - policy.leeway_for(token.expires_in)
        fraction = random.uniform(policy.fraction - policy.jitter, policy.fraction)
        refresh_at = token.obtained_at + token.expires_in * fraction
        took = max(0.0, now - token.obtained_at)  # this fetch's own time
        ahead = max(self.usable_until - margin - took, token.obtained_at + token.expires_in / 2)
        self.refresh_at = min(refresh_at, ahead)
        return token

    def take_failure(self, error: TokenError, now: float, policy: RetryPolicy) -> float:
        """Remember a failed fetch for a growing cooldown (or `Retry-After`); returns it."""
        self.failures += 1
        self.failure_count += 1
        self.failure = error
        retry_after = getattr(error, "retry_after", None)  # set by 429s and 503s
        cooldown = policy.cooldown_for(
            self.failures, permanent=error.is_permanent, retry_after=retry_after
        )
        self.retry_at = now + cooldown
        # Serve stale: while the current token is usable, callers keep it and the refresh
        # is tried again after the cooldown.
        self.refresh_at = self.retry_at if self.is_usable(now) else None
        self.stale_served += self.refresh_at is not None
        return cooldown

    def take_rejection(self, now: float, policy: RetryPolicy) -> bool:
        """An API rejected the current token (a 401): whether to drop it.

        A token is dropped and another fetched, unless tokens keep being rejected one
        after another: then the API refuses for another reason (audience, permissions)
        and every call would cost a token request. Rejections are then ignored for a
        growing cooldown, during which the 401 goes back to the caller.
        """
        if now < self.rejections_ignored_until:
            return False
        if now - self.last_rejection > policy.max_cooldown:
            self.rejections = 0  # the last rejection is long past: start over
        self.rejections += 1
        self.last_rejection = now
        if self.rejections > 1:
            cooldown = policy.cooldown_for(self.rejections - 1, permanent=False)
            self.rejections_ignored_until = now + cooldown
        self.drop()
        return True

    def drop(self) -> None:
        """Forget the current token (kept as `rejected`, so a store cannot hand it back)."""
        self.rejected = self.token
        self.token = None
        self.usable_until = 0.0
        self.refresh_at = None

    def counters(self, now: float | None = None) -> KeyStatistics:
        """This slot's counters, as a snapshot; with `now`, its health view too."""
        counters = KeyStatistics(
            hits=self.hits,
            misses=self.misses,
            fetches=self.fetches,
            refreshes=self.refreshes,
            failures=self.failure_count,
            store_hits=self.store_hits,
            joins=self.joins,
            stale_served=self.stale_served,
        )
        if now is None:
            return counters
        token, failure = self.token, self.failure
        return dataclasses.replace(
            counters,
            expires_in=None if token is None else max(0.0, token.expires_at - now),
            refresh_at=self.refresh_at,
            last_error=None if failure is None else f"{type(failure).__name__}: {failure}",
            cooldown_until=self.retry_at if self.is_cooling_down(now) else None,
            last_fetch_latency=self.last_latency,
            fetch_latency_p50=statistics.median(self.latencies) if self.latencies else None,
        )
