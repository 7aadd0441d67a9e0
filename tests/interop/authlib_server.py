"""Authlib's authorization server (its framework-independent core) on 127.0.0.1.

A stdlib `ThreadingHTTPServer` in a daemon thread feeds requests to
`authlib.oauth2.rfc6749.AuthorizationServer`: no web framework, so the server is
Authlib's own reading of RFC 6749 and RFC 7523, nothing of ours. It serves the RFC 8414
metadata document and the token endpoint with the client credentials grant.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"]
SCOPES = ["read", "write"]
ALGORITHMS = ["HS256", "RS256", "PS256", "ES256"]


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    """A registered client: its one token endpoint auth method (RFC 7591 section 2)."""

    client_id: str
    auth_method: str = "client_secret_basic"
    secret: str | None = None
    jwks: Mapping[str, Any] | None = None
    scope: str = "read write"

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and secrets.compare_digest(
            self.secret.encode(), client_secret.encode()
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, uri: str, headers: Mapping[str, str], form: dict[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _AssertionMethod(JWTBearerClientAssertion):  # type: ignore[misc]
    """One of RFC 7523's two methods, told apart by the assertion's `alg` (HMAC or not)."""

    CLIENT_AUTH_METHOD = ""
    hmac = False

    def __init__(self, audiences: list[str]) -> None:
        super().__init__(validate_jti=True)
        self._audiences = audiences
        self._seen: set[str] = set()

    def __call__(self, query_client: Any, request: _Request) -> Client | None:
        assertion = request.form.get("client_assertion")
        if not assertion:
            return None
        try:
            alg = jws.extract_compact(assertion.encode()).protected.get("alg", "")
        except Exception:  # Authlib's own parser will report it
            alg = ""
        if alg.startswith("HS") != self.hmac:
            return None
        return super().__call__(query_client, request)  # type: ignore[no-any-return]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # joserfc, under Authlib, takes only its "recommended" algorithms unless told:
        # PS256 is not one. A server configures what it accepts, as oidc-provider does.
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from exc
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        return self._audiences

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        key = f"{claims['sub']}:{jti}"
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class _ClientSecretJWT(_AssertionMethod):
    CLIENT_AUTH_METHOD = "client_secret_jwt"
    hmac = True

    def resolve_client_public_key(self, client: Client) -> OctKey:
        if client.secret is None:
            raise InvalidClientError(description="no secret registered")
        return OctKey.import_key(client.secret.encode())


class _PrivateKeyJWT(_AssertionMethod):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if client.jwks is None:
            raise InvalidClientError(description="no keys registered")
        return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]


class _Grant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


@dataclass
class AuthlibServer:
    """The running server: its issuer, token URL and registered clients."""

    issuer: str
    clients: dict[str, Client] = field(default_factory=dict)

    @property
    def token_url(self) -> str:
        return self.issuer + "/token"

    def add_client(self, client: Client) -> Client:
        self.clients[client.client_id] = client
        return client


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, state: AuthlibServer) -> None:
        super().__init__(scopes_supported=SCOPES)
        self.state = state
        self.register_grant(_Grant)
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda **_: secrets.token_urlsafe(24), expires_generator=lambda *_: 3600
            ),
        )
        audiences = [state.token_url, state.issuer]
        self.register_client_auth_method("client_secret_jwt", _ClientSecretJWT(audiences))
        self.register_client_auth_method("private_key_jwt", _PrivateKeyJWT(audiences))

    def query_client(self, client_id: str) -> Client | None:
        return self.state.clients.get(client_id)

    def save_token(self, token: Mapping[str, Any], request: _Request) -> None:
        pass

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers


def _handler(server: _Server) -> type[BaseHTTPRequestHandler]:
    state = server.state

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path != "/.well-known/oauth-authorization-server":
                self._send(404, {"error": "not_found"}, [])
                return
            metadata = {
                "issuer": state.issuer,
                "token_endpoint": state.token_url,
                "grant_types_supported": ["client_credentials"],
                "scopes_supported": SCOPES,
                "token_endpoint_auth_methods_supported": AUTH_METHODS,
                "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
            }
            self._send(200, metadata, [])

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8")
            form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            request = _Request(state.issuer + self.path, dict(self.headers.items()), form)
            if self.path != "/token":
                self._send(404, {"error": "not_found"}, [])
                return
            self._send(*server.create_token_response(request))

        def _send(self, status: int, body: Any, headers: list[tuple[str, str]]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers:
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def running_authlib_server() -> Iterator[AuthlibServer]:
    """Serve Authlib's authorization server on a free loopback port until exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.daemon_threads = True
    state = AuthlibServer(issuer=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(_Server(state))
    thread = threading.Thread(target=httpd.serve_forever, name="authlib-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
