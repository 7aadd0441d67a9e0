"""Parsing and checking token requests: client authentication, scope and audience.

Everything here is synchronous and free of I/O; `_idp.IdentityProvider` does the rest.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_plus

from ._http import Request, Response, json_response
from ._model import AuthMethod, IdPClient, Profile

__all__ = ["Attempt", "Grant", "Refusal", "check_request", "fault_body", "parse_request"]

REALM = "tokenflight-idp"
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_AUTH0_TEXT = {
    "invalid_client": "Unauthorized",
    "invalid_target": "Service not found or client not authorized for it",
    "invalid_scope": "Client has not been granted the requested scopes",
}
_FAULT_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    404: "not_found",
    429: "too_many_requests",
    503: "temporarily_unavailable",
}


class Refusal(Exception):
    """A token request refused with an RFC 6749 section 5.2 error."""

    def __init__(self, status: int, error: str, description: str, *, basic: bool = False) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.basic = basic

    def response(self, profile: Profile) -> Response:
        """The error response, in the profile's style."""
        status, error, description = self.status, self.error, self.description
        if profile.auth0_errors and error in _AUTH0_TEXT:
            status = 401 if error == "invalid_client" else 403
            error = "access_denied"
            if self.error == "invalid_client":
                description = _AUTH0_TEXT["invalid_client"]
        headers = list(_NO_STORE)
        if self.basic and status == 401:
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}"'))
        return json_response(status, {"error": error, "error_description": description}, headers)


@dataclass(slots=True)
class Attempt:
    """What a token request said, as far as it could be read."""

    form: dict[str, str] = field(default_factory=dict)
    resource: tuple[str, ...] = ()
    client_id: str | None = None
    secret: str | None = None
    auth_method: AuthMethod | None = None
    audience: str | None = None
    problem: Refusal | None = None
    #: The client whose assertion (RFC 7523) checked out, set by `_verify`.
    verified: IdPClient | None = None
    #: The ``DPoP`` header (RFC 9449 proof), if any.
    dpop_proof: str | None = None
    #: The ``User-Agent`` header (which HTTP library sent the request).
    user_agent: str | None = None

    def public_form(self) -> dict[str, str]:
        """The form without the client secret or assertion."""
        return {
            k: v for k, v in self.form.items() if k not in ("client_secret", "client_assertion")
        }


@dataclass(frozen=True, slots=True)
class Grant:
    """A checked request: who gets a token, for what."""

    client: IdPClient
    audience: str | None
    scope: tuple[str, ...]


def parse_request(request: Request) -> Attempt:
    """Read the form and the client's claimed identity; problems are kept, not raised."""
    attempt = Attempt()
    try:
        _parse_form(request, attempt)
        _parse_auth(request.headers.get("authorization"), attempt)
    except Refusal as refusal:
        attempt.problem = refusal
    attempt.audience = attempt.form.get("audience") or None
    attempt.dpop_proof = request.headers.get("dpop")
    return attempt


def _parse_form(request: Request, attempt: Attempt) -> None:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Refusal(
            400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
    try:
        pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(400, "invalid_request", "malformed form body") from exc
    resources: list[str] = []
    for name, value in pairs:
        if name == "resource":
            resources.append(value)
        elif name in attempt.form:
            raise Refusal(400, "invalid_request", f"parameter {name!r} repeated")
        else:
            attempt.form[name] = value
    attempt.resource = tuple(resources)


def _parse_auth(header: str | None, attempt: Attempt) -> None:
    form_id, form_secret = attempt.form.get("client_id"), attempt.form.get("client_secret")
    if "client_assertion" in attempt.form or "client_assertion_type" in attempt.form:
        if form_secret is not None or (header or "").lower().startswith("basic "):
            raise Refusal(400, "invalid_request", "more than one client authentication method")
        attempt.client_id = form_id
        attempt.auth_method = "private_key_jwt"  # or client_secret_jwt, once verified
        return
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() == "basic":
            if form_secret is not None:
                raise Refusal(400, "invalid_request", "more than one client authentication method")
            attempt.auth_method = "client_secret_basic"
            attempt.client_id, attempt.secret = _decode_basic(credentials.strip())
            return
    attempt.client_id = form_id
    if form_secret is not None:
        attempt.auth_method = "client_secret_post"
        attempt.secret = form_secret


def _decode_basic(credentials: str) -> tuple[str, str]:
    """Decode RFC 6749 section 2.3.1 Basic credentials: form-urlencoded id and secret."""
    try:
        text = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Refusal(401, "invalid_client", "malformed Basic credentials", basic=True) from exc
    client_id, colon, secret = text.partition(":")
    if not colon:
        raise Refusal(401, "invalid_client", "malformed Basic credentials", basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def check_request(attempt: Attempt, profile: Profile, clients: Mapping[str, IdPClient]) -> Grant:
    """Check a parsed request against the profile and the clients.

    Raises:
        Refusal: The request must be refused.
    """
    if attempt.problem is not None:
        raise attempt.problem
    client = _authenticate(attempt, profile, clients)
    grant_type = attempt.form.get("grant_type")
    if not grant_type:
        raise Refusal(400, "invalid_request", "missing grant_type")
    if grant_type != "client_credentials":
        raise Refusal(400, "unsupported_grant_type", f"grant_type {grant_type!r} not supported")
    scope = _check_scope(attempt.form.get("scope"), client)
    audience = _check_audience(attempt, profile, client)
    return Grant(client, audience, scope)


def _authenticate(
    attempt: Attempt, profile: Profile, clients: Mapping[str, IdPClient]
) -> IdPClient:
    if attempt.verified is not None:
        return attempt.verified
    basic = attempt.auth_method == "client_secret_basic"
    if attempt.auth_method is None or attempt.secret is None:
        raise Refusal(
            401, "invalid_client", "client authentication required", basic=profile.basic_auth
        )
    if (basic and not profile.basic_auth) or (not basic and not profile.form_auth):
        raise Refusal(401, "invalid_client", f"{attempt.auth_method} is not accepted", basic=basic)
    client = clients.get(attempt.client_id or "")
    if client is None or not hmac.compare_digest(
        client.secret.encode("utf-8"), attempt.secret.encode("utf-8")
    ):
        raise Refusal(401, "invalid_client", "unknown client or wrong secret", basic=basic)
    return client


def _check_scope(requested: str | None, client: IdPClient) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys((requested or "").split()))
    if not scopes:
        return client.scopes or ()
    if client.scopes is not None:
        outside = [s for s in scopes if s not in client.scopes]
        if outside:
            raise Refusal(400, "invalid_scope", f"scope not allowed: {' '.join(outside)}")
    return scopes


def _check_audience(attempt: Attempt, profile: Profile, client: IdPClient) -> str | None:
    audience = attempt.audience
    if audience is None and not attempt.resource:
        audience = client.default_audience or profile.default_audience
    attempt.audience = audience
    if profile.audience_required and audience is None:
        raise Refusal(
            403,
            "access_denied",
            "No audience parameter was provided, and no default audience has been configured",
        )
    if client.audiences is not None:
        for target in (audience, *attempt.resource):
            if target is not None and target not in client.audiences:
                raise Refusal(400, "invalid_target", f"audience or resource not allowed: {target}")
    return audience if audience is not None else (" ".join(attempt.resource) or None)


def fault_body(status: int) -> bytes:
    """A small JSON error body fitting a status, or nothing below 400."""
    if status < 400:
        return b""
    error = _FAULT_ERRORS.get(status, "server_error" if status >= 500 else "invalid_request")
    return b'{"error":"%s"}' % error.encode()


def token_headers(extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Headers of a token response: never cached."""
    return [*_NO_STORE, *extra]
