"""The `Auth` adapter for httpx and httpx2: admission, a token that outlives its trip, one retry.

The flow, per request: wait for admission (before the token is read, so it cannot age in
the connection pool's queue), take a token that stays valid for longer than authorized
requests take here, send, leave admission when the response headers arrive. A 401 that
rejects the token drops it (only if still current: a burst of 401s causes one new fetch)
and sends the request once more with a different token.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, final

import httpx

from ._http import AUTH_BASES, BYTE_STREAMS
from ._read import discard

if TYPE_CHECKING:
    from ._admission import Admission, RequestTimes
    from ._dpop import DPoPProver
    from ._manager import Resource, Scopes, TokenManager
    from ._token import Token

    _AuthBase = httpx.Auth
else:
    # One class for both stacks: httpx and httpx2 each accept only their own `Auth`.
    _AuthBase = type("_AuthBase", AUTH_BASES, {})

__all__ = ["TokenAuth"]


def is_invalid_token(response: httpx.Response) -> bool:
    """Whether a response says the token itself was rejected (not merely insufficient)."""
    if response.status_code != 401:
        return False
    challenge = response.headers.get("www-authenticate", "").lower()
    return "insufficient_scope" not in challenge


def is_replayable(request: httpx.Request) -> bool:
    """Whether the request body is in memory, so the request can be sent again."""
    return isinstance(request.stream, BYTE_STREAMS)


@final
class TokenAuth(_AuthBase):
    """Adds `Authorization: Bearer <token>` for one tenant's key, on httpx or httpx2.

    Made by `TokenManager.auth()` (or `client()`); pass it as `auth=` to an
    `httpx.AsyncClient` or an `httpx2.AsyncClient`. Each request first waits for a place
    in its `Admission`, then reads its token. On a 401 it invalidates the rejected token
    and retries once with another, provided the body can be sent again; a streamed body,
    or a provider that hands back the rejected token, gets the 401 back.
    """

    def __init__(
        self,
        manager: TokenManager,
        tenant: str,
        *,
        audience: str | None = None,
        resource: Resource | None = None,
        scopes: Scopes | None = None,
        admission: Admission,
        times: RequestTimes,
    ) -> None:
        self._manager = manager
        self._tenant = tenant
        self._audience = audience
        self._resource = resource
        self._scopes = scopes
        # Normalized once: every request reads its token by this key.
        self._key = manager._lookup_key(tenant, audience, resource, scopes)
        self._admission = admission
        self._times = times

    def __repr__(self) -> str:
        return (
            f"<TokenAuth tenant={self._tenant!r} audience={self._audience!r} "
            f"admission={self._admission.limit}>"
        )

    @property
    def admission(self) -> Admission:
        """The gate this auth's requests wait at."""
        return self._admission

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any]:
        raise RuntimeError(
            "tokenflight's TokenAuth works with httpx.AsyncClient and httpx2.AsyncClient "
            "only: token fetches are asynchronous and shared by the manager's event loop"
        )
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        admission = self._admission
        clock = self._manager._clock
        admitted = await self._admit(request)
        assert admitted is not None  # only a retry has a rejected token to compare
        ticket, token, dpop = admitted
        answered = None
        try:
            sent = clock()
            response = yield request
            answered = clock()
            self._times.observe(answered - sent)
        finally:
            admission.release(ticket, answered)
        if dpop is not None and _wants_dpop_nonce(response, dpop, request):
            await discard(response)  # at most 64 KiB of it read, never inflated
            ticket = await admission.acquire()
            try:
                self._authorize(request, token)  # a new proof carrying the server's nonce
                response = yield request
            finally:
                admission.release(ticket)
        if not is_invalid_token(response) or not is_replayable(request):
            return
        self._manager.invalidate(
            self._tenant,
            audience=self._audience,
            resource=self._resource,
            scopes=self._scopes,
            token=token,
        )
        await discard(response)  # release the connection (reading 64 KiB raw at most)
        admitted = await self._admit(request, rejected=token)
        if admitted is None:
            return  # the provider handed back the token just rejected: the 401 stands
        ticket = admitted[0]
        try:
            yield request
        finally:
            admission.release(ticket)

    async def _admit(
        self, request: httpx.Request, rejected: Token | None = None
    ) -> tuple[object, Token, DPoPProver | None] | None:
        """Wait for a place, then read and set the token: (ticket, token, DPoP prover).

        None, with the place given back, when the token is the `rejected` one.
        """
        ticket = await self._admission.acquire()
        try:
            token = await self._manager._get_by_key(self._key, self._times.margin)
            if rejected is not None and token.access_token == rejected.access_token:
                self._admission.release(ticket)
                return None
            return ticket, token, self._authorize(request, token)
        except BaseException:
            self._admission.release(ticket)
            raise

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
        and is_replayable(request)
    )
