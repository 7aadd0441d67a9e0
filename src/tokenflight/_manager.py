"""The token manager: a registry of slots, single-flight fetches, background refresh."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Self, TypedDict, Unpack, final

import anyio
import httpx
from anyio.abc import TaskGroup

from ._admission import Admission, RequestTimes
from ._auth import TokenAuth
from ._clock import loop_clock
from ._config import (
    ClientCredentials,
    RefreshPolicy,
    RetryPolicy,
    check_manager_options,
    normalize_resource,
)
from ._discovery import Discovery
from ._dpop import DPoPProver, NonceBook
from ._endpoint import TokenEndpoint
from ._errors import (
    ConfigurationError,
    ManagerClosedError,
)
from ._hooks import (
    HookChain,
    Instrumentation,
)
from ._http import (
    DEFAULT_ADMISSION,
    DEFAULT_CLIENT_LIMITS,
    DEFAULT_TIMEOUT,
    AnyClient,
    HttpStack,
    fetch_defaults,
    make_client,
    pool_admission,
    resolve_stack,
)
from ._mtls import ClientPool, tls_context
from ._origins import FetchLimiter, RateLimits, RequestPace
from ._pipeline import FetchPipeline
from ._resolver import Resolver, TenantResolver
from ._settle import Outcomes
from ._slot import LookupKey, SlotKey
from ._stats import KeyStatistics, ManagerStatistics
from ._store import TokenStore, store_key
from ._table import SlotTable
from ._token import Token
from ._token_flights import TokenFlights
from ._upkeep import Upkeep

__all__ = ["Resolver", "TokenManager"]

logger = logging.getLogger("tokenflight")

Scopes = str | tuple[str, ...] | list[str] | frozenset[str]
Resource = str | tuple[str, ...] | list[str]


class TokenOptions(TypedDict, total=False):
    """The keyword arguments of `TokenManager.get_token` (each one optional)."""

    audience: str | None
    resource: Resource | None
    scopes: Scopes | None
    min_ttl: float


_OPTION_NAMES = frozenset(TokenOptions.__annotations__)


@final
class TokenManager(anyio.AsyncContextManagerMixin):
    """Gets, caches, shares and refreshes client-credentials tokens for many tenants.

    Use it as `async with TokenManager() as tokens:`; it owns a pooled `AsyncClient` for
    token requests and one background task that refreshes tokens before they expire.

    Args:
        resolver: Async callable returning the `ClientCredentials` of a tenant that was
            not registered (or None if there is no such tenant). Called once per tenant.
        store: A shared `TokenStore` (such as `tokenflight.redis.RedisTokenStore`).
        refresh: When to refresh, expire and evict tokens.
        retry: How to retry token requests and how long to remember failures.
        http_client: Your own `httpx.AsyncClient` or `httpx2.AsyncClient` for token
            requests (not closed by us; it should not follow redirects).
        http: The HTTP stack of the client we create: `"auto"` (on asyncio, aiohttp's
            transport where `tokenflight[aiohttp]` is installed; else httpx2 where
            installed, else httpx; `$TOKENFLIGHT_HTTP` overrides), `"httpx"`, `"httpx2"`,
            or `"aiohttp"` (httpx2 over aiohttp's transport; asyncio only).
        limits: Connection pool limits of the client we create. Default: as many
            connections, all kept alive, as `max_concurrent_fetches`.
        timeout: Timeouts of the client we create.
        max_concurrent_fetches: Token requests in flight at once, across all tenants.
            Default: 64 on httpx2 and aiohttp's transport, 20 on httpx (whose pool,
            httpcore 1.0, does work per connection on every request: more is slower).
        credentials_ttl: Seconds the resolver's answer for a tenant is used before the
            resolver is asked again (at the tenant's next token request; cached tokens
            are kept). None: until the tenant is evicted. Either way, credentials the
            identity provider refuses (`invalid_client`, `unauthorized_client`) are
            re-resolved once, and the request retried if they changed.
        max_fetches_per_origin: Token requests in flight at once to one identity provider
            (a token endpoint's `scheme://host:port`). Default: three quarters of
            `max_concurrent_fetches` (at least 1), so that a slow or failing provider
            leaves a quarter of the places to the tenants of other providers, and one
            provider's cold start still gets most of them. Free places go to the
            provider holding the fewest.
        max_fetch_rate_per_origin: At most this many token requests per second to one
            identity provider, retries included (a burst of one second's worth, then
            evenly spaced), for providers that publish a rate limit: a cold start of
            10,000 tenants then keeps to it. None (the default): no ceiling beyond the
            concurrency limits and the provider's own 429s.
        instrumentation: An `Instrumentation` (such as
            `tokenflight.otel.OpenTelemetryInstrumentation`), or a sequence of them, told
            about token fetches, cooldowns and evictions; a hook that raises is logged.
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        store: TokenStore | None = None,
        refresh: RefreshPolicy | None = None,
        retry: RetryPolicy | None = None,
        http_client: AnyClient | None = None,
        http: HttpStack = "auto",
        limits: httpx.Limits | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_concurrent_fetches: int | None = None,
        max_fetches_per_origin: int | None = None,
        credentials_ttl: float | None = None,
        instrumentation: Instrumentation | Sequence[Instrumentation] | None = None,
        max_fetch_rate_per_origin: float | None = None,
    ) -> None:
        check_manager_options(
            max_concurrent_fetches=max_concurrent_fetches,
            max_fetches_per_origin=max_fetches_per_origin,
            max_fetch_rate_per_origin=max_fetch_rate_per_origin,
            credentials_ttl=credentials_ttl,
        )
        self._max_rate = max_fetch_rate_per_origin
        if store is not None and not isinstance(store, TokenStore):
            raise ConfigurationError("store must implement fetch(), invalidate() and aclose()")
        self._store = store
        self._refresh = refresh or RefreshPolicy()
        self._retry = retry or RetryPolicy()
        self._resolver = TenantResolver(
            resolver, budget=self._retry.total_timeout, remember_for=self._retry.cooldown
        )
        self._http_client: Any = http_client
        self._stack = resolve_stack(http)  # checked now; "auto" may wait for the loop
        # Shared by every auth() given no admission of its own, and by every request.
        self._admission = Admission(DEFAULT_ADMISSION)
        self._request_times = RequestTimes()
        self._timeout = timeout
        self._fetch_options = (max_concurrent_fetches, max_fetches_per_origin, limits)
        self._max_fetches, self._max_per_origin, self._limits = fetch_defaults(
            self._stack, *self._fetch_options
        )
        self._credentials_ttl = credentials_ttl
        self._table = SlotTable()  # tenants' credentials and slots, in one place
        self._tenants = self._table.credentials
        self._resolved = self._table.resolved_at
        self._slots = self._table.by_key  # the hot path's look-ups, one attribute deep
        self._default_get = self._table.defaults.get
        self._tg: TaskGroup | None = None
        self._thread: int | None = None  # the thread whose event loop runs the manager
        self._clock: Callable[[], float] = anyio.current_time
        # Every attribute exists from here on; those bound to an event loop are made
        # again by each `async with`, and the ones that need its client until then are None.
        self._dpop_nonces = NonceBook()
        self._tls_clients = ClientPool(self._make_tls_client)
        self._endpoint: TokenEndpoint | None = None
        self._discovery: Discovery | None = None
        self._flights: TokenFlights | None = None  # made by each `async with`
        self._hooks = HookChain(instrumentation)
        self._fetch_limiter = FetchLimiter(self._max_fetches, self._max_per_origin)
        self._rate_limits = RateLimits(
            self._clock, max_cooldown=self._retry.max_cooldown, default=self._retry.cooldown
        )
        self._upkeep = Upkeep(
            self._table,
            self._refresh,
            self._hooks,
            self._clock,
            start_refresh=lambda slot: self._flights_now().start(slot, background=True),
            running=lambda: self._tg is not None,
        )

    def __repr__(self) -> str:
        state = "running" if self._tg is not None else "stopped"
        return f"<TokenManager {state} tenants={len(self._tenants)} slots={len(self._table)}>"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        # The caller's block runs inside our task group, which would wrap its exceptions in
        # an ExceptionGroup; hold the block's own error (SystemExit and KeyboardInterrupt
        # too) and raise it as is, after the group.
        error: BaseException | None = None
        cancelled = anyio.get_cancelled_exc_class()
        async with AsyncExitStack() as stack:
            client = self._http_client
            self._stack = resolve_stack(self._stack)
            self._max_fetches, self._max_per_origin, self._limits = fetch_defaults(
                self._stack, *self._fetch_options
            )
            if client is None:
                client = make_client(self._stack, limits=self._limits, timeout=self._timeout)
                await stack.enter_async_context(client)
            if self._store is not None:
                stack.push_async_callback(self._store.aclose)
            self._clock = loop_clock()
            self._tls_clients = ClientPool(self._make_tls_client)
            stack.push_async_callback(self._tls_clients.aclose)
            self._rate_limits = RateLimits(
                self._clock, max_cooldown=self._retry.max_cooldown, default=self._retry.cooldown
            )
            self._endpoint = TokenEndpoint(
                client,
                retry=self._retry,
                refresh=self._refresh,
                clock=self._clock,
                client_for=self._tls_clients.client_for,
                rate_limits=self._rate_limits,
                pace=None if self._max_rate is None else RequestPace(self._max_rate, self._clock),
            )
            self._fetch_limiter = FetchLimiter(self._max_fetches, self._max_per_origin)
            self._upkeep.restart(self._clock)
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(self._upkeep.scheduler.run)
            self._discovery = Discovery(client, tg, self._retry, self._clock)
            pipeline = FetchPipeline(
                table=self._table,
                resolver=self._resolver,
                task_group=self._task_group,
                discovery=self._discovery,
                endpoint=self._endpoint,
                store=self._store,
                fetch_limiter=self._fetch_limiter,
                rate_limits=self._rate_limits,
                dpop_nonces=self._dpop_nonces,
                retry=self._retry,
                clock=self._clock,
                credentials_ttl=self._credentials_ttl,
            )
            self._flights = TokenFlights(
                table=self._table,
                resolver=self._resolver,
                refresh=self._refresh,
                retry=self._retry,
                upkeep=self._upkeep,
                hooks=self._hooks,
                outcomes=Outcomes(
                    refresh=self._refresh,
                    retry=self._retry,
                    request_times=self._request_times,
                    hooks=self._hooks,
                    clock=self._clock,
                ),
                pipeline=pipeline,
                task_group=tg,
                clock=self._clock,
            )
            self._thread = threading.get_ident()
            self._tg = tg
            try:
                yield self
            except cancelled:
                raise
            except BaseException as exc:
                error = exc
            finally:
                self._tg = None
                tg.cancel_scope.cancel()
                self._upkeep.retire_all()
        if error is not None:
            raise error

    def _make_tls_client(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        """A pooled client presenting one mutual-TLS certificate (RFC 8705)."""
        return make_client(self._stack, limits=self._limits, timeout=self._timeout, verify=context)

    # -- tenants ---------------------------------------------------------------------

    def register(self, tenant: str, credentials: ClientCredentials) -> None:
        """Set (or replace) a tenant's credentials.

        Replacing credentials drops the tenant's cached tokens and remembered failures
        at once, so corrected credentials take effect on the next call.

        Raises:
            ConfigurationError: The tenant name is empty or `credentials` is not a
                `ClientCredentials`.
        """
        if not isinstance(tenant, str) or not tenant:
            raise ConfigurationError("tenant must be a non-empty string")
        if not isinstance(credentials, ClientCredentials):
            raise ConfigurationError(
                f"credentials for tenant {tenant!r} must be a ClientCredentials, "
                f"not {type(credentials).__name__}"
            )
        self._upkeep.drop_tenant(tenant)
        self._table.set_tenant(tenant, credentials)
        self._resolver.forget(tenant)

    def unregister(self, tenant: str) -> None:
        """Forget a tenant and its tokens. Unknown tenants are ignored."""
        self._upkeep.drop_tenant(tenant)
        self._table.drop_tenant(tenant)

    # -- tokens ----------------------------------------------------------------------

    async def get_token(self, tenant: str, **options: Unpack[TokenOptions]) -> Token:
        """Return a usable token for the tenant, fetching it only if needed.

        A cached token is returned without a lock or any I/O. Concurrent callers of a
        cold or expired key share one token request, and its result or its error.

        Args:
            tenant: A registered tenant, or one the resolver knows.

        Keyword Args:
            audience: The `audience` to ask for; default: the credentials' audience.
            resource: RFC 8707 resource indicator(s); default: the credentials' resource.
            scopes: Scopes to ask for (order does not matter); default: the credentials'.
            min_ttl: Seconds the token must stay valid; refresh first if it would not
                (bounded by the token's own lifetime).

        Raises:
            TokenError: A subclass saying why no token could be had.
            ConfigurationError: `min_ttl` is negative or not a number.
        """
        # The keywords arrive as one dict rather than as keyword-only parameters: CPython
        # fills each omitted keyword-only parameter with a dict look-up of its default, four
        # of them on every call, which cost more than the rest of a cache hit (issue 10).
        if not options:  # the common case: the tenant's default key, nothing to build
            slot = self._default_get(tenant)
            if slot is not None and self._clock() < slot.usable_until:
                slot.hits += 1
                return slot.token  # type: ignore[return-value]
            return await self._flights_now().get((tenant, None, None, None), 0.0)
        if not options.keys() <= _OPTION_NAMES:
            unknown = sorted(options.keys() - _OPTION_NAMES)[0]
            raise TypeError(f"get_token() got an unexpected keyword argument {unknown!r}")
        audience = options.get("audience")
        resource: Any = options.get("resource")
        scopes: Any = options.get("scopes")
        min_ttl = options.get("min_ttl", 0.0)
        if audience is None and resource is None and scopes is None:
            key: LookupKey = (tenant, None, None, None)
            slot = self._default_get(tenant)
        else:
            key = self._lookup_key(tenant, audience, resource, scopes)
            slot = self._slots.get(key)
        if min_ttl and not min_ttl >= 0.0:  # negative or NaN (0.0, the default, skips this)
            raise ConfigurationError(f"min_ttl must be a number of seconds >= 0, not {min_ttl!r}")
        if slot is not None and self._clock() + min_ttl < slot.usable_until:
            slot.hits += 1
            return slot.token  # type: ignore[return-value]
        return await self._flights_now().get(key, min_ttl)

    def _lookup_key(
        self, tenant: str, audience: str | None, resource: Any, scopes: Any
    ) -> LookupKey:
        """A key as a caller spells it, in the form slots are looked up by: a plain tuple
        (it hashes and compares like the `SlotKey` it stands for, and is cheaper), scopes
        a set, resources canonical. Checked when its slot is made, not on every call."""
        if scopes is not None:
            scopes = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        if resource is not None and not isinstance(resource, str):
            resource = normalize_resource(resource)
        return (tenant, audience, resource, scopes)

    async def _get_by_key(self, key: LookupKey, min_ttl: float) -> Token:
        """A token for a key already in look-up form (`_lookup_key`): what `TokenAuth`
        reads on every request, with no keyword dict to build or check and no key to
        normalize. `min_ttl` is the manager's own measured margin, never negative."""
        slot = self._slots.get(key)
        if slot is not None and self._clock() + min_ttl < slot.usable_until:
            slot.hits += 1
            return slot.token  # type: ignore[return-value]
        return await self._flights_now().get(key, min_ttl)

    def invalidate(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        token: Token | None = None,
    ) -> bool:
        """Drop the cached token so that the next call fetches a new one.

        Args:
            token: Report this token as rejected by an API: drop it only if it is still
                the current one (so many callers reporting the same rejected token cause
                one new fetch, not many), and not while tokens keep being rejected one
                after another (an API that refuses every token for another reason, such
                as a wrong audience, would otherwise cost a token request per call:
                such reports are ignored for a growing cooldown, and logged).

        Returns:
            Whether a token was dropped.
        """
        slot = self._table.find(tenant, audience, resource, scopes)
        if slot is None or slot.token is None:
            return False
        if token is None:
            slot.drop()
        else:
            is_current = slot.token.access_token == token.access_token
            if not (is_current and slot.take_rejection(self._clock(), self._retry)):
                return False
        if token is not None and slot.rejections > 1:
            logger.warning(
                "an API rejected %d new tokens in a row for tenant %r (client_id %r): check "
                "the audience, resource and scopes; 401s are not answered with new tokens "
                "for %.1fs",
                slot.rejections,
                slot.key.tenant,
                slot.creds.client_id,
                slot.rejections_ignored_until - self._clock(),
            )
        dropped = slot.rejected
        if self._store is not None and self._tg is not None and dropped is not None:
            self._tg.start_soon(self._store.invalidate, store_key(slot), dropped.access_token)
        return True

    def auth(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        admission: Admission | None = None,
    ) -> TokenAuth:
        """An `Auth` for `httpx.AsyncClient(auth=...)` or `httpx2.AsyncClient(auth=...)`.

        Each request waits for its place in `admission` before its token is read, and gets
        a token that stays valid for longer than this process's requests take; on a 401 it
        drops the rejected token and retries the request once with another.

        Args:
            admission: The gate to wait at; give the same one to every `auth()` that
                sends through one client, sized to its `max_connections`. Default: one
                gate of 20 (the connections a default httpx or httpx2 pool keeps alive)
                shared by all `auth()` objects of this manager. `client()` sizes it for
                you.
        """
        return TokenAuth(
            self,
            tenant,
            audience=audience,
            resource=resource,
            scopes=scopes,
            admission=admission if admission is not None else self._admission,
            times=self._request_times,
        )

    def client(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        stack: HttpStack = "auto",
        limits: httpx.Limits | None = None,
        admission: Admission | None = None,
        **client_kwargs: Any,
    ) -> Any:
        """A new `AsyncClient` that sends this tenant's token, its pool and admission matched.

        The fast, correct way to make many concurrent authorized calls: requests wait in a
        first-in first-out queue *before* reading their token, at most the pool's size
        admitted at once, so tokens never age in the pool and the pool never queues.
        Close it when done (`async with tokens.client("acme") as http:`).

        Args:
            stack: `"auto"` (as `TokenManager(http=)`: on asyncio aiohttp's transport
                where installed, else httpx2, else httpx), `"httpx"`, `"httpx2"`, or
                `"aiohttp"` (httpx2 over aiohttp's transport, asyncio only).
            limits: The pool (default: 100 connections, all kept alive, opened on
                demand). Admission is bounded by `max_connections` unless `admission` is
                given, and finds how many of them to use.
            admission: A gate shared with other clients or `auth()` objects.
            client_kwargs: Anything else for the client (`base_url`, `timeout`, `headers`…).
                A tenant known by then (registered, or resolved earlier) that
                authenticates with `MutualTLS` or `SelfSignedMutualTLS` has its client
                present the same certificate, which certificate-bound tokens need (RFC
                8705 section 3), unless `verify=` is given.

        Returns:
            An `httpx.AsyncClient` or an `httpx2.AsyncClient`, by `stack`.

        Raises:
            ConfigurationError: An unknown or uninstalled stack, or `auth=` in the kwargs.
        """
        if "auth" in client_kwargs:
            raise ConfigurationError("client() sets auth= itself; use auth() for your own client")
        limits = limits or DEFAULT_CLIENT_LIMITS
        if admission is None:
            admission = Admission(pool_admission(limits))
        auth = self.auth(
            tenant, audience=audience, resource=resource, scopes=scopes, admission=admission
        )
        client_kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
        creds = self._tenants.get(tenant)
        identity = creds.client_auth.tls if creds is not None else None
        if identity is not None and "verify" not in client_kwargs:
            # Certificate-bound tokens (RFC 8705 section 3) are good only with the
            # certificate that got them.
            client_kwargs["verify"] = tls_context(identity)
        return make_client(resolve_stack(stack), limits=limits, auth=auth, **client_kwargs)

    def dpop_prover(
        self,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
    ) -> DPoPProver | None:
        """The DPoP key of a key's slot (None without DPoP or before its first token)."""
        slot = self._table.find(tenant, audience, resource, scopes)
        return None if slot is None else slot.dpop

    @property
    def dpop_nonces(self) -> NonceBook:
        """The `DPoP-Nonce` last given by each server (origin)."""
        return self._dpop_nonces

    def stats(self) -> ManagerStatistics:
        """A snapshot of the counters, per live key and in total, and each key's health."""
        keys: dict[SlotKey, KeyStatistics] = {}
        total = self._upkeep.retired
        now = None if self._tg is None else self._clock()  # the health view, while running
        for slot in self._table.unique():
            counters = slot.counters(now)
            keys[slot.key] = counters
            total = total + counters
        return ManagerStatistics(
            total=total,
            keys=keys,
            slots=len(keys),
            tenants=len(self._tenants),
            evictions=self._upkeep.evictions,
            in_flight=0 if self._flights is None else self._flights.in_flight,
            admission_waiting=self._admission.statistics().waiting,
        )

    # -- flights ---------------------------------------------------------------------

    def _task_group(self) -> TaskGroup:
        """The running manager's task group, or a typed error saying why there is none."""
        if self._tg is None:
            raise ManagerClosedError(
                "the TokenManager is not running: use it inside `async with TokenManager()`"
            )
        if threading.get_ident() != self._thread:  # one loop per thread at a time
            raise ConfigurationError(
                "this TokenManager runs on another event loop (or thread): use one manager "
                "per event loop, or call it on its own loop (anyio.from_thread.run)"
            )
        return self._tg

    def _flights_now(self) -> TokenFlights:
        """This run's flights, or a typed error saying why the manager has none."""
        self._task_group()  # raises unless running, on this event loop
        assert self._flights is not None  # made with the task group
        return self._flights
