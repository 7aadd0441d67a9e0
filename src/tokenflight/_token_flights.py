"""The miss path: a caller whose key holds no usable token joins the key's flight, or
starts one. Each flight runs in the manager's task group (a caller's cancellation cannot
end it for the others), and what it brought is settled (the slot, its timetable, the
hooks) before its waiters wake.

One `TokenFlights` per run of a manager (`async with`): it holds that run's task group,
clock, fetch pipeline and outcomes.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio.abc import TaskGroup

from ._config import RefreshPolicy, RetryPolicy, normalize_scopes
from ._endpoint import attempt_log
from ._errors import ManagerClosedError, TokenEndpointUnavailable, TokenError
from ._hooks import FetchStarted, HookChain, endpoint_host, next_fetch_id
from ._pipeline import FetchPipeline
from ._resolver import TenantResolver
from ._settle import Outcomes, too_short_lived
from ._slot import LookupKey, Slot, SlotKey, TokenFlight
from ._table import SlotTable
from ._token import Token
from ._upkeep import Upkeep

__all__ = ["TokenFlights"]


class TokenFlights:
    """Starts, joins and settles the token flights of one run of a manager."""

    def __init__(
        self,
        *,
        table: SlotTable,
        resolver: TenantResolver,
        refresh: RefreshPolicy,
        retry: RetryPolicy,
        upkeep: Upkeep,
        hooks: HookChain,
        outcomes: Outcomes,
        pipeline: FetchPipeline,
        task_group: TaskGroup,
        clock: Callable[[], float],
    ) -> None:
        self._table = table
        self._slots = table.by_key
        self._resolver = resolver
        self._refresh = refresh
        self._retry = retry
        self._upkeep = upkeep
        self._hooks = hooks
        self._outcomes = outcomes
        self._pipeline = pipeline
        self._tg = task_group
        self._clock = clock
        self.in_flight = 0

    async def get(self, key: LookupKey, min_ttl: float) -> Token:
        """A token for `key` with `min_ttl` left: the slot's, or a flight's new one."""
        slot = self._slots.get(key)
        if slot is None:
            slot = await self._slot(key)
        spent = 0  # flights whose token had expired by the time this caller woke up
        while True:
            now = self._clock()
            if slot.is_usable(now, slot.capped_ttl(min_ttl)):
                slot.hits += 1
                return slot.token  # type: ignore[return-value]
            slot.misses += 1
            flight = slot.flight
            if flight is None:
                if slot.failure is not None and slot.is_cooling_down(now):
                    raise slot.failure._clone()
                flight = self.start(slot, background=False)
            else:
                slot.joins += 1
            await flight.done.wait()
            token = flight.outcome()
            if self._clock() < token.expires_at:
                return token  # the new token, even if shorter-lived than min_ttl
            spent += 1
            if spent > 1:  # asking again and again would hammer the provider
                raise too_short_lived(slot, token)

    async def _slot(self, lookup: LookupKey) -> Slot:
        """The slot of a key seen for the first time, the tenant resolved if need be."""
        key = SlotKey(*lookup)  # made here, not by every waiting caller: a plain tuple of
        # strings is one object fewer for the garbage collector to track
        if key.scopes is not None:
            normalize_scopes(key.scopes)  # raises ConfigurationError on a bad scope
        tenants = self._table.credentials
        creds = tenants.get(key.tenant)
        if creds is None:
            resolved = await self._resolver.resolve(key.tenant, self._tg)
            # A register() during the resolution wins over the resolver's answer.
            creds = tenants.get(key.tenant) or resolved
            if creds is resolved:
                self._table.set_tenant(key.tenant, resolved, resolved_at=self._clock())
        existing = self._slots.get(key)  # another caller may have made it meanwhile
        if existing is not None:
            return existing
        slot, new = self._table.add(key, creds)
        if new:
            now = self._clock()
            slot.idle_check_at = now + self._refresh.idle_timeout
            slot.active_at = now
            if len(self._table) > self._refresh.max_slots:
                self._upkeep.shed(keep=slot)
        return slot

    def start(self, slot: Slot, *, background: bool) -> TokenFlight:
        """Start the slot's flight (there is none yet) in the manager's task group."""
        flight = TokenFlight(
            background=background, started_at=self._clock(), fetch_id=next_fetch_id()
        )
        if self._hooks:  # in the caller's task: an OpenTelemetry span nests under its own
            creds = slot.creds
            self._hooks.fetch_started(
                FetchStarted(
                    key=slot.key,
                    client_id=creds.client_id,
                    endpoint_host=endpoint_host(creds.token_url or creds.issuer),
                    background=background,
                    fetch_id=flight.fetch_id,
                )
            )
        slot.flight = flight
        self._upkeep.flight_started(slot, background=background)
        self.in_flight += 1
        self._tg.start_soon(self._fly, slot, flight)
        return flight

    async def _fly(self, slot: Slot, flight: TokenFlight) -> None:
        deadline = self._clock() + self._retry.total_timeout
        # A task started from another flight's task inherits its context: start clean,
        # so a fetch served from the store reports no attempts of an earlier request.
        attempt_log.set(None)

        async def obtain() -> Token:
            return await self._pipeline.obtain(slot, flight, deadline)

        def failure(message: str) -> TokenError:
            return TokenEndpointUnavailable(message, endpoint=slot.creds.token_url or "")

        try:
            await flight.run(
                obtain,
                # The wait for a place, a shared store and the token request keep to
                # `deadline` themselves, with more precise messages; this bounds the rest
                # (discovery, the resolver).
                budget=self._retry.total_timeout + 1.0,
                what=f"fetching a token for tenant {slot.key.tenant!r}",
                failure=failure,
            )
        finally:
            self.in_flight -= 1
            slot.flight = None
            settled = not isinstance(flight.error, ManagerClosedError)
            if settled:
                self._outcomes.settle(slot, flight)
            elif self._hooks:  # cut off by shutdown: nothing to settle, but hooks see the end
                self._outcomes.report_finish(slot, flight, self._clock())
            self._upkeep.flight_landed(slot, background=flight.background, settled=settled)
            flight.done.set()
