"""Single-flight tenant resolution: the user's resolver runs once per unknown tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from ._config import ClientCredentials
from ._errors import (
    ManagerClosedError,
    TenantResolutionError,
    TokenError,
    UnknownTenantError,
)

__all__ = ["Resolver", "TenantResolver"]

Resolver = Callable[[str], Awaitable[ClientCredentials | None]]


class _Resolution:
    __slots__ = ("creds", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.creds: ClientCredentials | None = None
        self.error: TokenError | None = None


class TenantResolver:
    """Asks a `Resolver` for a tenant's credentials, once however many callers wait.

    The call runs in the manager's task group, so a waiter that is cancelled does not
    cancel it for the others; its failures come back as typed errors.
    """

    def __init__(self, resolver: Resolver | None) -> None:
        self._resolver = resolver
        self._pending: dict[str, _Resolution] = {}

    async def resolve(self, tenant: str, tg: TaskGroup) -> ClientCredentials:
        """The tenant's credentials.

        Raises:
            UnknownTenantError: No resolver, or the resolver returned None.
            TenantResolutionError: The resolver raised or returned something else.
        """
        if self._resolver is None:
            raise UnknownTenantError(
                f"unknown tenant {tenant!r}: register() it or give TokenManager a resolver"
            )
        pending = self._pending.get(tenant)
        if pending is None:
            pending = self._pending[tenant] = _Resolution()
            tg.start_soon(self._run, self._resolver, tenant, pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error._clone()
        assert pending.creds is not None
        return pending.creds

    async def _run(self, resolver: Resolver, tenant: str, pending: _Resolution) -> None:
        try:
            creds = await resolver(tenant)
        except TokenError as exc:
            pending.error = exc
        except Exception as exc:
            pending.error = TenantResolutionError(
                f"the resolver failed for tenant {tenant!r}: {type(exc).__name__}"
            )
            pending.error.__cause__ = exc
        except BaseException:
            pending.error = ManagerClosedError("the TokenManager closed during resolution")
            raise
        else:
            if creds is None:
                pending.error = UnknownTenantError(
                    f"unknown tenant {tenant!r}: the resolver does not know it"
                )
            elif not isinstance(creds, ClientCredentials):
                pending.error = TenantResolutionError(
                    f"the resolver returned {type(creds).__name__} for tenant {tenant!r}, "
                    "expected ClientCredentials or None"
                )
            pending.creds = creds
        finally:
            del self._pending[tenant]
            pending.done.set()
