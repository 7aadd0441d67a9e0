"""The five contenders, each used the way its own docs suggest for a long-lived async worker.

Every contender offers the same three operations to the scenarios:
`get_token(tenant)` (the access token string), `call(tenant, url)` (a request to a protected
resource, with that library's way of adding the token) and `mock_client(tenant, handler)`
(an `httpx.AsyncClient` over `httpx.MockTransport` that authenticates like `call`).
`margin` is the refresh margin for peers that take one: their default (Authlib 60 s,
httpx-auth 30 s, hand-rolled 30 s) capped to 10% of the token lifetime, so that 2-second
test tokens do not make every token "already expired".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar

import anyio
import httpx

from tokenflight import ClientCredentials, ClientSecretBasic, TokenManager
from tokenflight._http import HttpStack

Handler = Callable[[httpx.Request], httpx.Response]

# Token requests handed to httpx at once, per contender. httpcore rescans its whole queue of
# waiting requests on every change, so a thousand requests queued on a pool of 100 cost
# seconds of CPU per request burst (quadratic): an artefact of httpcore, not of the strategy
# being measured, so every contender that sends concurrent token requests is held to it.
HTTP_SLOTS = 100


class Contender:
    name: ClassVar[str]
    default_margin: ClassVar[float] = 30.0

    def __init__(self, token_url: str, secret: str, *, lifetime: float = 3600.0) -> None:
        self.token_url = token_url
        self.secret = secret
        self.margin = min(self.default_margin, lifetime * 0.1)
        self.http = httpx.AsyncClient(timeout=30)
        self.slots = anyio.Semaphore(HTTP_SLOTS)

    async def start(self) -> None:
        """Open what the contender keeps for the process's lifetime."""

    async def aclose(self) -> None:
        await self.http.aclose()

    def add_tenant(self, tenant: str) -> None:
        """Make the tenant known (the tenant name is its client id at the IdP)."""

    async def get_token(self, tenant: str) -> str:
        raise NotImplementedError

    def hot_getter(self, tenant: str) -> Callable[[], Awaitable[object]]:
        """The contender's own cached-token call, one coroutine deep (like the baseline)."""
        return partial(self.get_token, tenant)

    def flow_auth(self, tenant: str) -> httpx.Auth | None:
        """The contender's own `httpx.Auth`, if it has one (to time its flow by hand)."""
        return None

    async def call(self, tenant: str, url: str) -> httpx.Response:
        token = await self.get_token(tenant)
        return await self.http.get(url, headers={"Authorization": f"Bearer {token}"})

    async def mock_client(self, tenant: str, handler: Handler) -> httpx.AsyncClient:
        """A client over `MockTransport` that authenticates like `call`, warmed up once."""
        client = self._mock_client(tenant, handler)
        await client.get("http://mock.invalid/warm-up")
        return client

    def _mock_client(self, tenant: str, handler: Handler) -> httpx.AsyncClient:
        contender = self

        class _Auth(httpx.Auth):
            async def async_auth_flow(self, request):
                token = await contender.get_token(tenant)
                request.headers["Authorization"] = f"Bearer {token}"
                yield request

        return httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=_Auth())

    async def _post_token(self, tenant: str) -> dict[str, Any]:
        async with self.slots:
            response = await self.http.post(
                self.token_url,
                data={"grant_type": "client_credentials"},
                auth=(tenant, self.secret),
            )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


class Tokenflight(Contender):
    """`async with TokenManager()`, `register()`, then `get_token()` / `auth=tokens.auth()`."""

    name = "tokenflight"
    stack: HttpStack = "httpx"  # the stack every contender here runs on (and a plain install's)

    async def start(self) -> None:
        self.manager = TokenManager(http=self.stack)
        self._cm = self.manager.__aenter__()
        await self._cm
        self._auths: dict[str, httpx.Auth] = {}

    async def aclose(self) -> None:
        await self.manager.__aexit__(None, None, None)
        await super().aclose()

    def add_tenant(self, tenant: str) -> None:
        creds = ClientCredentials(
            token_url=self.token_url, client_id=tenant, auth=ClientSecretBasic(self.secret)
        )
        self.manager.register(tenant, creds)
        self._auths[tenant] = self.manager.auth(tenant)

    async def get_token(self, tenant: str) -> str:
        return (await self.manager.get_token(tenant)).access_token

    def hot_getter(self, tenant: str) -> Callable[[], Awaitable[object]]:
        return partial(self.manager.get_token, tenant)

    def flow_auth(self, tenant: str) -> httpx.Auth | None:
        return self._auths[tenant]

    async def call(self, tenant: str, url: str) -> httpx.Response:
        return await self.http.get(url, auth=self._auths[tenant])

    def _mock_client(self, tenant: str, handler: Handler) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=self._auths[tenant])


class Naive(Contender):
    """A new token request for every call, on one shared keep-alive client."""

    name = "naive"

    async def get_token(self, tenant: str) -> str:
        return str((await self._post_token(tenant))["access_token"])


class HandRolled(Contender):
    """A dict of tokens and an asyncio.Lock per tenant, re-checked after the lock."""

    name = "hand-rolled"

    async def start(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def add_tenant(self, tenant: str) -> None:
        self._locks[tenant] = asyncio.Lock()

    async def get_token(self, tenant: str) -> str:
        cached = self._tokens.get(tenant)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        async with self._locks[tenant]:
            cached = self._tokens.get(tenant)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            started = time.monotonic()
            body = await self._post_token(tenant)
            lifetime = float(body.get("expires_in", 300))
            refresh_at = started + lifetime - min(self.margin, lifetime * 0.1)
            self._tokens[tenant] = (body["access_token"], refresh_at)
            return str(body["access_token"])


class Authlib(Contender):
    """One `AsyncOAuth2Client(grant_type="client_credentials", token_endpoint=...)` per tenant.

    `fetch_token()` when the client holds no token yet, as Authlib's docs show; afterwards
    `ensure_active_token()` (under Authlib's refresh lock) re-fetches it when it expires.
    """

    name = "authlib"
    default_margin = 60.0

    async def start(self) -> None:
        self._cls = _authlib_on_httpx()
        self._clients: dict[str, Any] = {}

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        await super().aclose()

    def _client(self, tenant: str, **kwargs: Any) -> Any:
        return self._cls(
            client_id=tenant,
            client_secret=self.secret,
            token_endpoint=self.token_url,
            grant_type="client_credentials",
            leeway=self.margin,
            timeout=30,
            **kwargs,
        )

    def add_tenant(self, tenant: str) -> None:
        self._clients[tenant] = self._client(tenant)

    async def _active(self, client: Any) -> Any:
        if not client.token:
            async with self.slots:
                await client.fetch_token()
        elif client.token.is_expired(leeway=client.leeway):
            async with self.slots:
                await client.ensure_active_token(client.token)
        else:
            await client.ensure_active_token(client.token)  # what each request does
        return client

    async def get_token(self, tenant: str) -> str:
        client = await self._active(self._clients[tenant])
        return str(client.token["access_token"])

    def hot_getter(self, tenant: str) -> Callable[[], Awaitable[object]]:
        client = self._clients[tenant]  # holds a token by now: what each request runs
        return partial(client.ensure_active_token, client.token)

    async def call(self, tenant: str, url: str) -> httpx.Response:
        client = await self._active(self._clients[tenant])
        response: httpx.Response = await client.get(url)  # ensure_active_token again inside
        return response

    async def mock_client(self, tenant: str, handler: Handler) -> httpx.AsyncClient:
        client = self._client(tenant, transport=httpx.MockTransport(handler))
        self._clients[f"{tenant}/mock"] = client
        await client.fetch_token()
        await client.get("http://mock.invalid/warm-up")
        return client  # type: ignore[no-any-return]


def _authlib_on_httpx() -> Any:
    """Authlib's `AsyncOAuth2Client` on httpx, like every other contender here.

    Authlib 1.9 runs on httpx2 whenever it can import it; B1-B7 run all contenders on httpx
    (httpx-auth supports nothing else), so hide httpx2 while Authlib's client is imported.
    """
    import sys
    import warnings

    saved = sys.modules.get("httpx2")
    sys.modules["httpx2"] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notice for httpx
            from authlib.integrations.httpx_client import AsyncOAuth2Client
    finally:
        if saved is not None:
            sys.modules["httpx2"] = saved
        else:
            del sys.modules["httpx2"]
    assert issubclass(AsyncOAuth2Client, httpx.AsyncClient), "Authlib is not on httpx here"
    return AsyncOAuth2Client


class HttpxAuth(Contender):
    """`httpx_auth.OAuth2ClientCredentials` as `auth=` on an `httpx.AsyncClient`.

    Its auth flow is synchronous: a token request blocks the event loop (on a shared
    `httpx.Client`, given through `client=`), and tokens live in a process-global cache.
    """

    name = "httpx-auth"

    async def start(self) -> None:
        import httpx_auth

        httpx_auth.OAuth2.token_cache.clear()
        self._mod = httpx_auth
        self._sync = httpx.Client(timeout=30)
        self._auths: dict[str, Any] = {}

    async def aclose(self) -> None:
        self._sync.close()
        self._mod.OAuth2.token_cache.clear()
        await super().aclose()

    def add_tenant(self, tenant: str) -> None:
        self._auths[tenant] = self._mod.OAuth2ClientCredentials(
            self.token_url, tenant, self.secret, client=self._sync, early_expiry=self.margin
        )

    async def get_token(self, tenant: str) -> str:
        auth = self._auths[tenant]  # what its auth flow does for every request
        return str(
            self._mod.OAuth2.token_cache.get_token(
                auth.state, early_expiry=auth.early_expiry, on_missing_token=auth.request_new_token
            )
        )

    async def call(self, tenant: str, url: str) -> httpx.Response:
        return await self.http.get(url, auth=self._auths[tenant])

    def _mock_client(self, tenant: str, handler: Handler) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=self._auths[tenant])


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (Tokenflight, Naive, HandRolled, Authlib, HttpxAuth)
}


class TokenflightHttpx2(Tokenflight):
    """tokenflight on httpx2 (`tokenflight[httpx2]`): B4's stack rows, not a comparison."""

    name = "tokenflight-httpx2"
    stack = "httpx2"


class TokenflightAiohttp(Tokenflight):
    """tokenflight on aiohttp's transport (`tokenflight[aiohttp]`, the fastest stack)."""

    name = "tokenflight-aiohttp"
    stack = "aiohttp"


#: tokenflight on its other stacks, for B4's cold-start rows.
STACK_VARIANTS: dict[str, type[Contender]] = {
    c.name: c for c in (TokenflightHttpx2, TokenflightAiohttp)
}
