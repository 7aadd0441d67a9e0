"""How one slot gets its next token: re-resolution, discovery, the provider's cooldown
and a place, the shared store, then the token endpoint.

The manager makes one `FetchPipeline` per `async with` and runs `obtain` in each
flight's own task; everything here shares the flight's `deadline`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ._config import ClientCredentials, RetryPolicy
from ._discovery import Discovery
from ._dpop import DPoPProver, NonceBook
from ._endpoint import TokenEndpoint, attempt_log
from ._errors import TokenEndpointUnavailable, TokenRequestRefused
from ._origins import FetchLimiter, RateLimits, origin_of
from ._redact import redact_url
from ._resolver import TenantResolver
from ._slot import Slot, TokenFlight
from ._store import TokenStore, fetch_from, store_key
from ._table import SlotTable
from ._token import Token

__all__ = ["FetchPipeline"]

logger = logging.getLogger("tokenflight")


class FetchPipeline:
    """The steps of one token fetch for a slot (no state of its own beyond its parts)."""

    def __init__(
        self,
        *,
        table: SlotTable,
        resolver: TenantResolver,
        task_group: Callable[[], TaskGroup],
        discovery: Discovery,
        endpoint: TokenEndpoint,
        store: TokenStore | None,
        fetch_limiter: FetchLimiter,
        rate_limits: RateLimits,
        dpop_nonces: NonceBook,
        retry: RetryPolicy,
        clock: Callable[[], float],
        credentials_ttl: float | None,
    ) -> None:
        self._table = table
        self._resolver = resolver
        self._task_group = task_group
        self._discovery = discovery
        self._endpoint = endpoint
        self._store = store
        self._fetch_limiter = fetch_limiter
        self._rate_limits = rate_limits
        self._dpop_nonces = dpop_nonces
        self._retry = retry
        self._clock = clock
        self._credentials_ttl = credentials_ttl

    async def obtain(self, slot: Slot, flight: TokenFlight, deadline: float) -> Token:
        """The slot's next token; resolved credentials are re-resolved when stale or refused."""
        resolved_at = self._table.resolved_at.get(slot.key.tenant)
        if resolved_at is None:
            return await self._obtain_with(slot, flight, deadline)
        ttl = self._credentials_ttl
        if ttl is not None and self._clock() >= resolved_at + ttl:
            await self._resolve_again(slot)
        sent = self._table.credentials.get(slot.key.tenant)
        try:
            return await self._obtain_with(slot, flight, deadline)
        except TokenRequestRefused as exc:
            # Rotated credentials: the resolver may know the new ones; ask it once.
            if exc.error not in ("invalid_client", "unauthorized_client"):
                raise
            if not await self._resolve_again(slot, sent=sent):
                raise
            logger.info(
                "tenant %r: %s with the resolver's old credentials; retrying with its new ones",
                slot.key.tenant,
                exc.error,
            )
            return await self._obtain_with(slot, flight, deadline)

    async def _resolve_again(self, slot: Slot, *, sent: ClientCredentials | None = None) -> bool:
        """Ask the resolver again for the slot's tenant; whether the credentials changed.

        `sent` are the credentials a refused request used: when another key of the tenant
        has re-resolved them since, they changed already and the resolver is not asked.
        """
        tenant = slot.key.tenant
        current = self._table.credentials.get(tenant)
        if sent is not None and current is not None and current != sent:
            return tenant in self._table.resolved_at

        def adopt(fresh: ClientCredentials) -> None:  # once, before any waiter wakes
            if tenant not in self._table.resolved_at:
                return  # register()ed meanwhile: the user's credentials win
            if fresh != self._table.credentials.get(tenant):
                self._table.set_tenant(tenant, fresh, resolved_at=self._clock())
            else:
                self._table.resolved_at[tenant] = self._clock()

        fresh = await self._resolver.resolve(tenant, self._task_group(), then=adopt)
        if tenant not in self._table.resolved_at:
            return False
        return fresh != (sent if sent is not None else current)

    async def _obtain_with(self, slot: Slot, flight: TokenFlight, deadline: float) -> Token:
        """Discover, wait out the provider's cooldown and for a place, then fetch."""
        await self._prepare(slot)
        origin = origin_of(slot.creds.token_url or "")
        while True:  # a cooldown may begin while this fetch waits for its place
            await self._wait_for_origin(slot, origin, deadline)
            # The wait for a place and the request after it share the fetch's budget.
            queued_at = self._clock()
            if not await self._fetch_limiter.acquire_before(origin, deadline):
                raise self._out_of_budget(slot, origin, waited=None)
            waited = self._clock() - queued_at
            try:
                if not self._rate_limits.remaining(origin):
                    with anyio.CancelScope(deadline=deadline):
                        return await self._fetch(slot, flight, deadline)
                    raise self._out_of_budget(slot, origin, waited=waited)
            finally:
                self._fetch_limiter.release(origin)

    def _out_of_budget(
        self, slot: Slot, origin: str, *, waited: float | None
    ) -> TokenEndpointUnavailable:
        """The error of a fetch whose budget ran out waiting for a place (`waited` None),
        or in its token request after `waited` seconds for the place."""
        url = slot.creds.token_url or ""
        budget = f"the fetch budget of {self._retry.total_timeout:g}s"
        if waited is None:
            held = self._fetch_limiter.in_flight(origin)
            return TokenEndpointUnavailable(
                f"no place for a token request to {redact_url(url)} within {budget}: waiting "
                f"for a place behind {held} request(s) in flight to this provider (at most "
                f"{self._fetch_limiter.per_origin} at once); no request sent",
                endpoint=url,
            )
        log = attempt_log.get()
        attempts = 0 if log is None else log.attempts
        queue = f", {waited:.2g}s of it waiting for a place" if waited >= 0.001 else ""
        return TokenEndpointUnavailable(
            f"token endpoint {redact_url(url)} gave no token within {budget}{queue} "
            f"({attempts} attempt(s))",
            endpoint=url,
            attempts=attempts,
        )

    async def _prepare(self, slot: Slot) -> None:
        """Discover the token endpoint (once per issuer) and make the DPoP key if needed."""
        discovery = self._discovery
        # The tenant's credentials as given; the slot's are the discovered ones, until the
        # metadata expires (a new registration resets them, undiscovered).
        configured = self._table.credentials.get(slot.key.tenant, slot.creds)
        if configured.token_url is None and (
            slot.creds.token_url is None or self._clock() >= slot.discovered_until
        ):
            slot.creds, slot.discovered_until = await discovery.resolve(configured)
        if slot.creds.dpop and slot.dpop is None:
            slot.dpop = DPoPProver(self._dpop_nonces)

    async def _wait_for_origin(self, slot: Slot, origin: str, deadline: float) -> None:
        """Wait out the provider's rate-limit cooldown, or fail now if it outlasts the budget.

        Raises:
            TokenEndpointUnavailable: The cooldown ends after `deadline`; it carries the
                seconds left as `retry_after`, which the slot's own cooldown honours.
        """
        left = self._rate_limits.remaining(origin)
        if not left:
            return
        url = slot.creds.token_url or ""
        if self._clock() + left >= deadline:
            raise TokenEndpointUnavailable(
                f"token endpoint {redact_url(url)} is rate limited: it asked (HTTP "
                f"{self._rate_limits.status(origin)}, Retry-After) for no requests for "
                f"another {left:.1f}s; no request sent",
                endpoint=url,
                status_code=self._rate_limits.status(origin),
                retry_after=left,
            )
        await anyio.sleep(self._rate_limits.jittered(origin))

    async def _fetch(self, slot: Slot, flight: TokenFlight, deadline: float) -> Token:
        """One token from the shared store, or from the endpoint (under the store's lock).

        A store waiting on another process's fetch gives up in time to fetch by `deadline`.
        """
        endpoint = self._endpoint
        fetched = False

        async def fetch_new() -> Token:
            nonlocal fetched
            fetched = True
            return await endpoint.fetch(slot.creds, slot.request, dpop=slot.dpop)

        if self._store is None or slot.dpop is not None:  # a DPoP token is bound to our key
            return await fetch_new()
        # A token an API just rejected is as good as the current one: never handed back.
        current = slot.token or slot.rejected
        token = await fetch_from(
            self._store, store_key(slot), fetch_new, current=current, deadline=deadline
        )
        if not fetched:
            slot.store_hits += 1
            flight.from_store = True
        return token
