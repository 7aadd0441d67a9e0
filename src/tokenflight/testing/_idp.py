"""The bundled identity provider: a real OAuth 2.0 token endpoint on loopback."""

from __future__ import annotations

import heapq
import json
import math
import secrets
import ssl
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self, final

import anyio
import anyio.abc
from anyio import AsyncContextManagerMixin
from anyio.streams.tls import TLSListener

from ._dpop import DPoPChecker, DPoPRefusal
from ._http import Request, Response, json_response, serve_connection
from ._model import (
    PROFILES,
    Fault,
    IdPClient,
    Profile,
    ProfileName,
    TokenRequestRecord,
    check_lifetime,
    expires_in_value,
)
from ._mtls import authenticate_by_certificate, peer_thumbprint, remember_peer_certificate
from ._standards import METADATA_PATHS, AccessTokenSigner, metadata_response
from ._token import Attempt, Grant, Refusal, check_request, fault_body, parse_request, token_headers
from ._verify import JtiCache, verify_client_assertion

__all__ = ["IdentityProvider"]

_TokenKey = tuple[str, str | None, tuple[str, ...]]


@dataclass(slots=True)
class _Issued:
    token: str
    key: _TokenKey
    expires_at: float
    whole: bool
    jkt: str | None = None  # the DPoP key thumbprint the token is bound to
    x5t: str | None = None  # the client certificate's thumbprint (RFC 8705 section 3)


@dataclass(slots=True)
class _Pending:
    fault: Fault
    remaining: int | None


@final
class IdentityProvider(AsyncContextManagerMixin):
    """An OAuth 2.0 client-credentials identity provider served over HTTP/1.1 on loopback.

    It runs in the caller's event loop (asyncio or trio) while its ``async with`` block is
    open; leaving the block closes the listener and every connection.

    Args:
        profile: The provider to imitate, a key of `PROFILES`.
        token_lifetime: Seconds a token lives; the profile's default when ``None``.
        latency: Seconds to wait before answering each token request.
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one.
        clock: The clock tokens expire on; the event loop's (`anyio.current_time`) by default.
        max_records: How many `TokenRequestRecord` to keep in `requests`.
        admin: Serve the control endpoints under ``/_admin/`` (for a provider running in
            another process, such as the benchmarks'): ``GET /_admin/stats`` (counters as
            JSON; ``?records=1`` adds ``[time, status]`` of each token request),
            ``POST /_admin/reset`` (zero the counters, clear the faults),
            ``POST /_admin/fault`` (a `Fault` as JSON plus ``count``),
            ``POST /_admin/resource`` (``{"latency": seconds}`` of the protected resource) and
            ``POST /_admin/clients`` (``{"clients": [{"client_id", "secret",
            "token_lifetime"?}]}``). Unauthenticated: loopback and tests only.
    """

    def __init__(
        self,
        *,
        profile: ProfileName = "generic",
        token_lifetime: float | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        max_records: int = 100_000,
        admin: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        if token_lifetime is not None:
            check_lifetime(token_lifetime)
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be a finite number >= 0, got {latency}")
        self.profile: Profile = PROFILES[profile]
        self.token_lifetime = token_lifetime
        self.latency = latency
        #: Seconds the protected resource takes to answer (a remote API's latency).
        self.resource_latency = 0.0
        #: Answer a token request with the client's current unexpired token when it has one.
        self.reuse_tokens = False
        #: Issue signed JWT access tokens and leave out ``expires_in`` (clients read ``exp``).
        self.jwt_access_tokens = False
        #: Discovery documents served (RFC 8414 and OpenID Connect), and fields overridden.
        self.metadata_documents = set(METADATA_PATHS.values())
        self.metadata_overrides: dict[str, object] = {}
        #: Extra headers on discovery documents (for example ``Cache-Control``).
        self.metadata_headers: list[tuple[str, str]] = []
        self.metadata_requests = 0
        self._jti = JtiCache()
        self._tls = tls
        #: Checks DPoP proofs; set ``dpop.nonce`` to demand a nonce (RFC 9449 section 8).
        self.dpop = DPoPChecker()
        self._signer = AccessTokenSigner()
        self.admin = admin
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._clock = clock or anyio.current_time
        self._clients: dict[str, IdPClient] = {}
        self._faults: deque[_Pending] = deque()
        self._tokens: dict[str, _Issued] = {}
        self._current: dict[_TokenKey, _Issued] = {}
        self._expiry: list[tuple[float, str]] = []
        self._records: deque[TokenRequestRecord] = deque(maxlen=max_records)
        self._counts: Counter[tuple[str | None, str | None]] = Counter()
        self.reset_counters()

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not running"
        return f"<IdentityProvider profile={self.profile.name!r} {where}>"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
        async with listener, anyio.create_task_group() as tg:
            self._bound_port = listener.extra(anyio.abc.SocketAttribute.local_port)
            serving: anyio.abc.Listener[Any] = listener
            if self._tls is not None:  # https, asking for client certificates as set
                serving = TLSListener(listener, self._tls, standard_compatible=False)
            tg.start_soon(serving.serve, self._serve_connection, tg)
            try:
                yield self
            finally:
                self._bound_port = None
                tg.cancel_scope.cancel()

    async def serve_forever(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the URL through ``task_status`` (``tg.start``)."""
        async with self:
            task_status.started(self.url)
            await anyio.sleep_forever()

    # -- addresses ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``; only while running."""
        if self._bound_port is None:
            raise RuntimeError("the identity provider is not running; use `async with`")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{host}:{self._bound_port}"

    @property
    def token_url(self) -> str:
        """The token endpoint's URL, per the profile."""
        return self.url + self.profile.token_path

    @property
    def resource_url(self) -> str:
        """The URL of a protected resource that accepts this provider's tokens."""
        return self.url + "/api/resource"

    # -- clients and faults -------------------------------------------------------------

    @property
    def clients(self) -> dict[str, IdPClient]:
        """The registered clients by id (a copy)."""
        return dict(self._clients)

    def add_client(
        self,
        client_id: str,
        secret: str | None = None,
        *,
        audiences: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        default_audience: str | None = None,
        token_lifetime: float | None = None,
        public_key: str | Mapping[str, Any] | None = None,
        tls_subject: str | None = None,
        tls_certificate: str | bytes | None = None,
        key_certificate: str | None = None,
    ) -> IdPClient:
        """Register (or replace) a client; a random secret when ``secret`` is ``None``.

        ``public_key`` (PEM, JWK or JWKS) lets the client use ``private_key_jwt``;
        ``tls_subject`` or ``tls_certificate`` mutual TLS (with ``tls=``);
        ``key_certificate`` (the key's PEM certificate) makes assertions name it in an
        ``x5t#S256`` header, as Microsoft Entra ID does.
        """
        client = IdPClient(
            client_id=client_id,
            secret=secrets.token_urlsafe(24) if secret is None else secret,
            audiences=None if audiences is None else frozenset(audiences),
            scopes=None if scopes is None else tuple(scopes),
            default_audience=default_audience,
            token_lifetime=token_lifetime,
            public_key=public_key,
            tls_subject=tls_subject,
            tls_certificate=tls_certificate,
            key_certificate=key_certificate,
        )
        self._clients[client_id] = client
        return client

    def inject(self, fault: Fault, count: int | None = 1) -> None:
        """Apply ``fault`` to the next ``count`` token requests (``None``: until cleared).

        Faults queue up in order: a fault applies after the ones injected before it are used up.
        """
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None, got {count}")
        self._faults.append(_Pending(fault, count))

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        self._faults.clear()

    def revoke(self, access_token: str) -> bool:
        """Revoke a token: the protected resource answers 401 to it from now on.

        Returns:
            Whether the token was one this IdP had issued and not yet revoked.
        """
        issued = self._tokens.pop(access_token, None)
        if issued is None:
            return False
        if self._current.get(issued.key) is issued:
            del self._current[issued.key]  # the next request gets a new token
        return True

    # -- counters -----------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequestRecord]:
        """The token requests received, oldest first (at most ``max_records``)."""
        return list(self._records)

    def token_requests_for(self, client_id: str | None = None, audience: str | None = None) -> int:
        """How many token requests came from ``client_id`` for ``audience`` (``None``: any)."""
        return sum(
            n
            for (cid, aud), n in self._counts.items()
            if (client_id is None or cid == client_id) and (audience is None or aud == audience)
        )

    def reset_counters(self) -> None:
        """Zero every counter and forget the request records (issued tokens stay valid)."""
        self.token_requests = 0
        self.connections = 0
        self.resource_requests = 0
        self.resource_rejections = 0
        self._records.clear()
        self._counts.clear()

    # -- serving ------------------------------------------------------------------------

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        remember_peer_certificate(stream)
        await serve_connection(stream, self._dispatch)

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path == self.profile.token_path:
            if request.method != "POST":
                return json_response(405, {"error": "method_not_allowed"}, [("Allow", "POST")])
            return await self._token_endpoint(request)
        if path == "/api" or path.startswith("/api/"):
            if self.resource_latency > 0:
                await anyio.sleep(self.resource_latency)
            return self._resource(request)
        if path in METADATA_PATHS:
            self.metadata_requests += 1
            return self._with_metadata_headers(
                metadata_response(
                    path,
                    issuer=self.url,
                    token_url=self.token_url,
                    profile=self.profile,
                    served=self.metadata_documents,
                    overrides=self.metadata_overrides,
                    tls=self._tls is not None,
                )
            )
        if self.admin and path.startswith("/_admin/"):
            return self._admin(request)
        return json_response(404, {"error": "not_found"})

    async def _token_endpoint(self, request: Request) -> Response:
        arrived = self._clock()
        self.token_requests += 1
        fault = self._take_fault()
        delay = self.latency + (fault.delay if fault is not None else 0.0)
        if delay > 0:
            await anyio.sleep(delay)
        attempt = parse_request(request)
        if fault is not None and (fault.drop or fault.status is not None):
            response = _fault_response(fault)
        else:
            response = self._answer(attempt)
            if fault is not None:
                response.headers = [*response.headers, *fault.headers.items()]
        attempt.user_agent = request.headers.get("user-agent")
        self._record(arrived, attempt, None if response.drop else response.status)
        return response

    def _with_metadata_headers(self, response: Response) -> Response:
        if not self.metadata_headers:
            return response
        response.headers = [*response.headers, *self.metadata_headers]
        return response

    def _take_fault(self) -> Fault | None:
        if not self._faults:
            return None
        pending = self._faults[0]
        if pending.remaining is not None:
            pending.remaining -= 1
            if pending.remaining == 0:
                self._faults.popleft()
        return pending.fault

    def _answer(self, attempt: Attempt) -> Response:
        if attempt.auth_method == "private_key_jwt" and attempt.problem is None:
            audiences = (self.token_url, self.url)
            verify_client_assertion(attempt, self._clients, audiences=audiences, jti=self._jti)
        authenticate_by_certificate(attempt, self._clients)
        jkt = None
        if attempt.dpop_proof is not None:
            try:
                jkt = self.dpop.check(attempt.dpop_proof, method="POST", url=self.token_url)
            except DPoPRefusal as refusal:
                return refusal.token_response()
        try:
            grant = check_request(attempt, self.profile, self._clients)
        except Refusal as refusal:
            return refusal.response(self.profile)
        now = self._clock()
        self._prune(now)
        issued = self._reusable(grant, now) if self.reuse_tokens else None
        if issued is None:
            lifetime = self._lifetime(grant.client)
            issued = self._issue(grant, now, lifetime)
            expires_in = expires_in_value(lifetime)
        else:
            expires_in = self._remaining(issued, now)
        issued.jkt = jkt
        if attempt.auth_method in ("tls_client_auth", "self_signed_tls_client_auth"):
            issued.x5t = peer_thumbprint()  # a certificate-bound token
        payload: dict[str, object] = {
            "access_token": issued.token,
            "token_type": self.profile.token_type if jkt is None else "DPoP",
            "expires_in": expires_in,
        }
        if grant.scope and self.profile.include_scope:
            payload["scope"] = " ".join(grant.scope)
        if self.jwt_access_tokens:
            del payload["expires_in"]
        body = json.dumps(payload, separators=(",", ":")).encode()
        return Response(200, token_headers(), body)

    def _lifetime(self, client: IdPClient) -> float:
        if client.token_lifetime is not None:
            return client.token_lifetime
        if self.token_lifetime is not None:
            return self.token_lifetime
        return self.profile.token_lifetime

    def _issue(self, grant: Grant, now: float, lifetime: float) -> _Issued:
        key: _TokenKey = (grant.client.client_id, grant.audience, grant.scope)
        value = secrets.token_urlsafe(32)
        if self.jwt_access_tokens:
            value = self._signer.sign(
                issuer=self.url, client_id=key[0], audience=key[1], lifetime=lifetime
            )
        issued = _Issued(value, key, now + lifetime, float(lifetime).is_integer())
        self._tokens[issued.token] = issued
        self._current[key] = issued
        heapq.heappush(self._expiry, (issued.expires_at, issued.token))
        return issued

    def _reusable(self, grant: Grant, now: float) -> _Issued | None:
        issued = self._current.get((grant.client.client_id, grant.audience, grant.scope))
        if issued is None or self._remaining(issued, now) <= 0:
            return None
        return issued

    @staticmethod
    def _remaining(issued: _Issued, now: float) -> int | float:
        remaining = max(issued.expires_at - now, 0.0)
        return math.floor(remaining) if issued.whole else round(remaining, 3)

    def _prune(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, token = heapq.heappop(expiry)
            issued = self._tokens.pop(token, None)
            if issued is not None and self._current.get(issued.key) is issued:
                del self._current[issued.key]

    def _record(self, arrived: float, attempt: Attempt, status: int | None) -> None:
        self._counts[(attempt.client_id, attempt.audience)] += 1
        if self._records.maxlen == 0:
            return
        record = TokenRequestRecord(
            time=arrived,
            client_id=attempt.client_id,
            audience=attempt.audience,
            resource=attempt.resource,
            scope=attempt.form.get("scope"),
            auth_method=attempt.auth_method,
            status=status,
            form=attempt.public_form(),
            user_agent=attempt.user_agent,
        )
        self._records.append(record)

    # -- control endpoints (admin=True) --------------------------------------------------

    def _admin(self, request: Request) -> Response:
        route = (request.method, request.path)
        try:
            body = json.loads(request.body or b"{}") if request.method == "POST" else {}
            if route == ("GET", "/_admin/stats"):
                return json_response(200, self._admin_stats("records=1" in request.query))
            if route == ("POST", "/_admin/reset"):
                self.reset_counters()
                self.clear_faults()
                return json_response(200, {"now": self._clock()})
            if route == ("POST", "/_admin/fault"):
                count = body.pop("count", 1)
                raw = body.pop("body", None)
                self.inject(
                    Fault(**body, body=None if raw is None else raw.encode()),
                    count=count,
                )
                return json_response(200, {"queued": len(self._faults)})
            if route == ("POST", "/_admin/resource"):
                latency = float(body["latency"])
                if not math.isfinite(latency) or latency < 0:
                    raise ValueError(f"latency must be a finite number >= 0, got {latency}")
                self.resource_latency = latency
                return json_response(200, {"latency": latency})
            if route == ("POST", "/_admin/clients"):
                for spec in body["clients"]:
                    self.add_client(
                        spec["client_id"],
                        spec["secret"],
                        token_lifetime=spec.get("token_lifetime"),
                    )
                return json_response(200, {"clients": len(self._clients)})
        except (ValueError, TypeError, KeyError) as exc:
            return json_response(400, {"error": "invalid_request", "error_description": str(exc)})
        return json_response(404, {"error": "not_found"})

    def _admin_stats(self, with_records: bool) -> dict[str, object]:
        stats: dict[str, object] = {
            "now": self._clock(),
            "token_requests": self.token_requests,
            "connections": self.connections,
            "resource_requests": self.resource_requests,
            "resource_rejections": self.resource_rejections,
            "clients": len(self._clients),
        }
        if with_records:
            stats["records"] = [[r.time, r.status] for r in self._records]
        return stats

    # -- protected resource -------------------------------------------------------------

    def _resource(self, request: Request) -> Response:
        self.resource_requests += 1
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        issued = self._tokens.get(token.strip()) if scheme.lower() in ("bearer", "dpop") else None
        if issued is not None and issued.expires_at <= self._clock():
            issued = None
        if issued is not None and (issued.jkt is not None or scheme.lower() == "dpop"):
            try:  # a DPoP-bound token needs the DPoP scheme and a proof by its key
                if issued.jkt is None or scheme.lower() != "dpop":
                    raise DPoPRefusal("invalid_token", "token and scheme do not match")
                self.dpop.check(
                    request.headers.get("dpop"),
                    method=request.method,
                    url=self.url + request.path,
                    access_token=issued.token,
                    jkt=issued.jkt,
                )
            except DPoPRefusal as refusal:
                self.resource_rejections += 1
                return refusal.resource_response()
        if issued is not None and issued.x5t is not None and issued.x5t != peer_thumbprint():
            issued = None  # bound to a certificate this connection did not present
        if issued is None:
            self.resource_rejections += 1
            challenge = ("WWW-Authenticate", 'Bearer error="invalid_token"')
            return json_response(401, {"error": "invalid_token"}, [challenge])
        if request.path == "/api/forbidden":
            challenge = ("WWW-Authenticate", 'Bearer error="insufficient_scope"')
            return json_response(403, {"error": "insufficient_scope"}, [challenge])
        client_id, audience, _ = issued.key
        return json_response(200, {"ok": True, "client_id": client_id, "audience": audience})


def _fault_response(fault: Fault) -> Response:
    status = fault.status if fault.status is not None else 200
    body = fault.body if fault.body is not None else fault_body(status)
    return Response(
        status,
        list(fault.headers.items()),
        body,
        content_type=fault.content_type,
        drop=fault.drop,
        partial=fault.drop and fault.status is not None,
    )
