"""Synchronous code (Celery, RQ, Django views, scripts): the manager on a background loop.

`SyncTokenManager` starts an event loop on a thread of its own, runs a `TokenManager` on
it, and forwards calls from any thread. Threads share the manager's cache and its single
flight: 16 threads asking for a cold key cause one token request.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Self, final

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._auth import is_invalid_token, is_replayable
from ._errors import ConfigurationError, ManagerClosedError
from ._http import AUTH_BASES
from ._manager import Resource, Scopes, TokenManager
from ._read import discard_sync
from ._stats import ManagerStatistics
from ._token import Token

if TYPE_CHECKING:
    from ._config import ClientCredentials

    _AuthBase = httpx.Auth
else:
    _AuthBase = type("_AuthBase", AUTH_BASES, {})

__all__ = ["SyncTokenAuth", "SyncTokenManager"]


@final
class SyncTokenManager:
    """A `TokenManager` for synchronous code, callable from any thread.

    ```python
    with SyncTokenManager() as tokens:
        tokens.register("acme", ClientCredentials(...))
        token = tokens.get_token("acme")
        with httpx.Client(auth=tokens.auth("acme")) as http:
            http.get("https://api.example.com/things")
    ```

    Or `tokens.start()` and `tokens.close()` where a framework has no lifespan. The
    manager runs on a background thread's event loop (asyncio), started and stopped with
    the facade. It belongs to the process that started it: after `fork()` (Celery's
    prefork pool, for example) the child must make its own, such as in
    `worker_process_init`; using the parent's raises `ConfigurationError`.

    Args:
        backend: The event loop behind it: `"asyncio"` or `"trio"`.
        manager_options: What `TokenManager(...)` takes (`resolver`, `store`, `refresh`,
            `retry`, `http`, `limits`, `timeout`, `max_concurrent_fetches`).
    """

    def __init__(
        self, *, backend: Literal["asyncio", "trio"] = "asyncio", **manager_options: Any
    ) -> None:
        if backend not in ("asyncio", "trio"):
            raise ConfigurationError(f"backend must be 'asyncio' or 'trio', not {backend!r}")
        self._backend = backend
        self._manager = TokenManager(**manager_options)  # checks the options now
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._pid = 0

    def __repr__(self) -> str:
        state = "running" if self._portal is not None else "stopped"
        return f"<SyncTokenManager {state} {self._manager!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Self:
        """Start the background event loop and the manager on it.

        Raises:
            ConfigurationError: Already started.
        """
        if self._portal is not None:
            raise ConfigurationError("this SyncTokenManager is already started")
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal(self._backend))
            manager: AbstractContextManager[TokenManager] = portal.wrap_async_context_manager(
                self._manager
            )
            stack.enter_context(manager)
            self._stack = stack.pop_all()
        self._portal = portal
        self._pid = os.getpid()
        return self

    def close(self) -> None:
        """Stop the manager and its event loop thread (a no-op when not started)."""
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None and self._pid == os.getpid():
            stack.close()

    # -- the TokenManager's API, from any thread -----------------------------------

    def register(self, tenant: str, credentials: ClientCredentials) -> None:
        """`TokenManager.register`, from any thread."""
        self._running_portal().call(partial(self._manager.register, tenant, credentials))

    def unregister(self, tenant: str) -> None:
        """`TokenManager.unregister`, from any thread."""
        self._running_portal().call(partial(self._manager.unregister, tenant))

    def get_token(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        min_ttl: float = 0.0,
    ) -> Token:
        """`TokenManager.get_token`, from any thread (blocks until a token is had).

        Raises:
            TokenError: A subclass saying why no token could be had.
        """
        get = partial(
            self._manager.get_token,
            tenant,
            audience=audience,
            resource=resource,
            scopes=scopes,
            min_ttl=min_ttl,
        )
        return self._running_portal().call(get)

    def invalidate(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        token: Token | None = None,
    ) -> bool:
        """`TokenManager.invalidate`, from any thread."""
        drop = partial(
            self._manager.invalidate,
            tenant,
            audience=audience,
            resource=resource,
            scopes=scopes,
            token=token,
        )
        return self._running_portal().call(drop)

    def stats(self) -> ManagerStatistics:
        """`TokenManager.stats`, from any thread."""
        return self._running_portal().call(self._manager.stats)

    def auth(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
    ) -> SyncTokenAuth:
        """An `Auth` for `httpx.Client(auth=...)` or `httpx2.Client(auth=...)`."""
        return SyncTokenAuth(self, tenant, audience=audience, resource=resource, scopes=scopes)

    # -- plumbing --------------------------------------------------------------------

    def _running_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise ManagerClosedError(
                "the SyncTokenManager is not running: use `with SyncTokenManager() as "
                "tokens:` or call start()"
            )
        if self._pid != os.getpid():
            raise ConfigurationError(
                "this SyncTokenManager was started in another process (before a fork): "
                "make one in each process, e.g. in Celery's worker_process_init"
            )
        return self._portal


@final
class SyncTokenAuth(_AuthBase):
    """Adds the tenant's token to requests of an `httpx.Client` or an `httpx2.Client`.

    On a 401 that rejects the token it reports it and retries once with another, like
    `TokenAuth` does for async clients.
    """

    def __init__(
        self,
        tokens: SyncTokenManager,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
    ) -> None:
        self._tokens = tokens
        self._key: dict[str, Any] = {"audience": audience, "resource": resource, "scopes": scopes}
        self._tenant = tenant

    def __repr__(self) -> str:
        return f"<SyncTokenAuth tenant={self._tenant!r} audience={self._key['audience']!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        token: Token = self._tokens.get_token(self._tenant, **self._key)
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if not is_invalid_token(response) or not is_replayable(request):
            return
        self._tokens.invalidate(self._tenant, token=token, **self._key)
        fresh = self._tokens.get_token(self._tenant, **self._key)
        if fresh.access_token == token.access_token:
            return  # the provider handed back the rejected token: the 401 stands
        discard_sync(response)  # at most 64 KiB of it read, never inflated
        request.headers["Authorization"] = f"Bearer {fresh.access_token}"
        yield request

    async def async_auth_flow(self, request: Any) -> Any:
        raise RuntimeError(
            "SyncTokenAuth is for httpx.Client and httpx2.Client; with an AsyncClient use "
            "TokenManager.auth()"
        )
        yield request  # pragma: no cover  (makes this an async generator, as httpx expects)
