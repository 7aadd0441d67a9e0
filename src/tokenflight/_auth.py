"""The `httpx.Auth` adapter: a Bearer header from the manager, one retry on 401."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, final

import httpx

if TYPE_CHECKING:
    from ._dpop import DPoPProver
    from ._manager import Resource, Scopes, TokenManager
    from ._token import Token

__all__ = ["TokenAuth"]


def _is_invalid_token(response: httpx.Response) -> bool:
    """Whether a response says the token itself was rejected (not merely insufficient)."""
    if response.status_code != 401:
        return False
    challenge = response.headers.get("www-authenticate", "").lower()
    return "insufficient_scope" not in challenge


@final
class TokenAuth(httpx.Auth):
    """Adds `Authorization: Bearer <token>` for one tenant's key.

    Made by `TokenManager.auth()`. On a 401 it invalidates the rejected token (only if it
    is still the slot's current one, so a burst of 401s causes one new fetch) and retries
    once, provided the request body can be sent again; a streamed body gets the 401 back.
    """

    def __init__(
        self,
        manager: TokenManager,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
    ) -> None:
        self._manager = manager
        self._tenant = tenant
        self._audience = audience
        self._resource = resource
        self._scopes = scopes

    def __repr__(self) -> str:
        return f"<TokenAuth tenant={self._tenant!r} audience={self._audience!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError(
            "tokenflight's TokenAuth works with httpx.AsyncClient only: token fetches are "
            "asynchronous and shared by the manager's event loop"
        )
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        manager = self._manager
        token = await manager.get_token(
            self._tenant, audience=self._audience, resource=self._resource, scopes=self._scopes
        )
        dpop = self._authorize(request, token)
        response = yield request
        if dpop is not None and _wants_dpop_nonce(response, dpop, request):
            self._authorize(request, token)  # a new proof carrying the server's nonce
            await response.aread()
            response = yield request
        if not _is_invalid_token(response) or not isinstance(request.stream, httpx.ByteStream):
            return
        manager.invalidate(
            self._tenant,
            audience=self._audience,
            resource=self._resource,
            scopes=self._scopes,
            token=token,
        )
        token = await manager.get_token(
            self._tenant, audience=self._audience, resource=self._resource, scopes=self._scopes
        )
        self._authorize(request, token)
        await response.aread()  # release the connection before sending again
        yield request

    def _authorize(self, request: httpx.Request, token: Token) -> DPoPProver | None:
        """Set `Authorization` (Bearer, or DPoP with a fresh proof for a DPoP token)."""
        prover = None
        if token.token_type.lower() == "dpop":
            prover = self._manager.dpop_prover(
                self._tenant, audience=self._audience, resource=self._resource, scopes=self._scopes
            )
        if prover is None:
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            return None
        request.headers["Authorization"] = f"DPoP {token.access_token}"
        request.headers["DPoP"] = prover.proof(
            request.method, str(request.url), access_token=token.access_token
        )
        return prover


def _wants_dpop_nonce(response: httpx.Response, prover: DPoPProver, request: httpx.Request) -> bool:
    """Whether a resource asked for a DPoP nonce it just gave (RFC 9449 section 9)."""
    fresh = prover.nonces.observe(str(request.url), response.headers)
    challenge = response.headers.get("www-authenticate", "").lower()
    return (
        fresh
        and response.status_code == 401
        and "use_dpop_nonce" in challenge
        and isinstance(request.stream, httpx.ByteStream)
    )
