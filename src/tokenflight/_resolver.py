"""Single-flight tenant resolution: the user's resolver runs once per unknown tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from anyio.abc import TaskGroup

from ._config import ClientCredentials
from ._errors import TenantResolutionError, UnknownTenantError
from ._flight import SingleFlight

__all__ = ["Resolver", "TenantResolver"]

Resolver = Callable[[str], Awaitable[ClientCredentials | None]]


class TenantResolver:
    """Asks a `Resolver` for a tenant's credentials, once however many callers wait.

    The call runs in the manager's task group, so a waiter that is cancelled does not
    cancel it for the others. It has a time budget (a resolver that hangs fails its
    tenant, not the manager), its failures come back as typed errors and are remembered
    for `remember_for` seconds, so a tenant the resolver does not know does not reach
    the user's database on every call.
    """

    def __init__(
        self, resolver: Resolver | None, *, budget: float = 30.0, remember_for: float = 1.0
    ) -> None:
        self._resolver = resolver
        self._flights: SingleFlight[str, ClientCredentials] = SingleFlight(
            budget=budget,
            remember_for=lambda error: remember_for,
            failure=TenantResolutionError,
        )

    async def resolve(
        self,
        tenant: str,
        tg: TaskGroup,
        then: Callable[[ClientCredentials], None] | None = None,
    ) -> ClientCredentials:
        """The tenant's credentials; `then` is called with them once, before any waiter
        wakes (so that concurrent callers never see the answer before it is adopted).

        Raises:
            UnknownTenantError: No resolver, or the resolver returned None.
            TenantResolutionError: The resolver raised, hung, or returned something else.
        """
        resolver = self._resolver
        if resolver is None:
            raise UnknownTenantError(
                f"unknown tenant {tenant!r}: register() it or give TokenManager a resolver"
            )

        async def work() -> ClientCredentials:
            creds = _check(tenant, await resolver(tenant))
            if then is not None:
                then(creds)
            return creds

        return await self._flights.run(tenant, work, tg, what=f"resolving tenant {tenant!r}")

    def forget(self, tenant: str) -> None:
        """Drop a remembered failure for `tenant` (it was registered meanwhile)."""
        self._flights.forget(tenant)


def _check(tenant: str, creds: object) -> ClientCredentials:
    if creds is None:
        raise UnknownTenantError(f"unknown tenant {tenant!r}: the resolver does not know it")
    if not isinstance(creds, ClientCredentials):
        raise TenantResolutionError(
            f"the resolver returned {type(creds).__name__} for tenant {tenant!r}, "
            "expected ClientCredentials or None"
        )
    return creds
