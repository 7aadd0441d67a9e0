"""Standards the bundled IdP speaks beyond RFC 6749: discovery and JWT access tokens.

- Authorization server metadata (RFC 8414) at ``/.well-known/oauth-authorization-server``
  and OpenID Connect discovery at ``/.well-known/openid-configuration``; the issuer is the
  IdP's base URL.
- JWT access tokens (RFC 9068 style), signed with a key made per IdP, carrying ``exp``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any

from ._http import Response, json_response
from ._model import Profile

__all__ = ["METADATA_PATHS", "AccessTokenSigner", "metadata_response"]

#: The discovery paths by document name.
METADATA_PATHS = {
    "/.well-known/oauth-authorization-server": "oauth-authorization-server",
    "/.well-known/openid-configuration": "openid-configuration",
}


def auth_methods(profile: Profile, *, tls: bool = False) -> list[str]:
    """The client authentication methods a profile accepts, as metadata names them."""
    methods = []
    if profile.basic_auth:
        methods.append("client_secret_basic")
    if profile.form_auth:
        methods.append("client_secret_post")
    methods += ["client_secret_jwt", "private_key_jwt"]
    return [*methods, "tls_client_auth", "self_signed_tls_client_auth"] if tls else methods


def metadata_response(
    path: str,
    *,
    issuer: str,
    token_url: str,
    profile: Profile,
    served: Collection[str],
    overrides: Mapping[str, Any],
    tls: bool = False,
) -> Response:
    """The metadata document at `path`, or 404 when the IdP does not serve that one."""
    name = METADATA_PATHS.get(path)
    if name is None or name not in served:
        return json_response(404, {"error": "not_found"})
    document: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods(profile, tls=tls),
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256", "HS256"],
        "tls_client_certificate_bound_access_tokens": True if tls else None,
    }
    document.update(overrides)
    return json_response(200, {k: v for k, v in document.items() if v is not None})


class AccessTokenSigner:
    """Signs JWT access tokens with an HS256 key of its own (no verifier outside the IdP)."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def sign(self, *, issuer: str, client_id: str, audience: str | None, lifetime: float) -> str:
        """A signed JWT access token whose `exp` is `lifetime` seconds from now."""
        from joserfc import jwt
        from joserfc.jwk import OctKey

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + int(lifetime),
            "jti": secrets.token_urlsafe(12),
        }
        if audience is not None:
            claims["aud"] = audience
        header = {"alg": "HS256", "typ": "at+jwt"}
        return jwt.encode(header, claims, OctKey.import_key(self._secret), algorithms=["HS256"])
