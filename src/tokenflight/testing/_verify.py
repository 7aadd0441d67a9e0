"""Checking client assertions (RFC 7523, OpenID Connect Core section 9) at the bundled IdP.

A `client_secret_jwt` assertion is checked against the client's secret (HS256), a
`private_key_jwt` one against the client's registered public key or JWKS. The claims
`iss` = `sub` = client id, `aud` (the token endpoint or the issuer), `exp`, and a `jti`
not seen before are required; anything else answers 401 `invalid_client`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from ._model import IdPClient
from ._mtls import certificate_thumbprint
from ._token import Attempt, Refusal

__all__ = ["ASSERTION_TYPE", "JtiCache", "public_keys", "verify_client_assertion"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_KEY_ALGS = frozenset({"RS256", "PS256", "ES256"})
#: Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
LEEWAY = 5


class JtiCache:
    """The `jti` values seen, each kept until its assertion expires (replay protection)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}

    def add(self, client_id: str, jti: str, exp: float, now: float) -> bool:
        """Remember a `jti`; False when it was seen already (a replay)."""
        if len(self._seen) > 1000:
            self._seen = {k: v for k, v in self._seen.items() if v + LEEWAY > now}
        key = (client_id, jti)
        if key in self._seen:
            return False
        self._seen[key] = exp
        return True


def public_keys(value: object) -> list[Any]:
    """Import a registered public key: a PEM string, a JWK dict, or a JWKS (`{"keys": []}`)."""
    from joserfc.jwk import ECKey, KeySet, RSAKey

    if isinstance(value, Mapping) and "keys" in value:
        return list(KeySet.import_key_set(dict(value)).keys)  # type: ignore[arg-type]
    for key_cls in (RSAKey, ECKey):
        try:
            return [key_cls.import_key(value)]  # type: ignore[arg-type]
        except Exception:
            continue
    raise ValueError("public_key must be a PEM string, a JWK or a JWKS")


def _refuse(description: str) -> Refusal:
    return Refusal(401, "invalid_client", description)


def _header(assertion: str) -> dict[str, Any]:
    from joserfc.util import urlsafe_b64decode

    try:
        head = json.loads(urlsafe_b64decode(assertion.split(".")[0].encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse("client_assertion is not a JWS compact JWT") from exc
    if not isinstance(head, dict):
        raise _refuse("client_assertion is not a JWS compact JWT")
    return head


def _candidate_keys(client: IdPClient, header: Mapping[str, Any]) -> tuple[list[Any], str]:
    from joserfc.jwk import OctKey

    alg = header.get("alg")
    if alg == "HS256":
        return [OctKey.import_key(client.secret.encode("utf-8"))], "client_secret_jwt"
    if alg not in _KEY_ALGS:
        raise _refuse(f"client_assertion alg {alg!r} is not accepted")
    if client.public_key is None:
        raise _refuse("no public key is registered for this client")
    keys = public_keys(client.public_key)
    kid = header.get("kid")
    if kid is not None:
        keys = [key for key in keys if key.kid in (None, kid)]
    if not keys:
        raise _refuse(f"no registered key has kid {kid!r}")
    return keys, "private_key_jwt"


def verify_client_assertion(
    attempt: Attempt,
    clients: Mapping[str, IdPClient],
    *,
    audiences: Collection[str],
    jti: JtiCache,
) -> None:
    """Authenticate `attempt` by its client assertion; sets `attempt.verified` or `.problem`."""
    try:
        attempt.verified = _verify(attempt, clients, audiences, jti)
    except Refusal as refusal:
        attempt.problem = refusal


def _verify(
    attempt: Attempt,
    clients: Mapping[str, IdPClient],
    audiences: Collection[str],
    jti_cache: JtiCache,
) -> IdPClient:
    from joserfc import jwt
    from joserfc.errors import JoseError

    form = attempt.form
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _refuse(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion", "")
    header = _header(assertion)
    unverified = _unverified_claims(assertion)
    client_id = form.get("client_id") or unverified.get("sub")
    client = clients.get(client_id) if isinstance(client_id, str) else None
    if client is None:
        raise _refuse("unknown client")
    attempt.client_id = client.client_id
    keys, method = _candidate_keys(client, header)
    attempt.auth_method = method  # type: ignore[assignment]
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            claims = jwt.decode(assertion, key, algorithms=[header["alg"]]).claims
            break
        except (JoseError, ValueError):
            continue
    if claims is None:
        raise _refuse("client_assertion signature does not verify")
    _check_claims(claims, client.client_id, audiences, jti_cache)
    certificate = client.key_certificate if method == "private_key_jwt" else None
    if certificate is not None and header.get("x5t#S256") != certificate_thumbprint(certificate):
        raise _refuse("x5t#S256 header is missing or does not name the registered certificate")
    return client


def _unverified_claims(assertion: str) -> dict[str, Any]:
    from joserfc.util import urlsafe_b64decode

    parts = assertion.split(".")
    try:
        claims = json.loads(urlsafe_b64decode(parts[1].encode())) if len(parts) == 3 else None
    except (ValueError, UnicodeDecodeError):
        claims = None
    if not isinstance(claims, dict):
        raise _refuse("client_assertion is not a JWS compact JWT")
    return claims


def _check_claims(
    claims: Mapping[str, Any], client_id: str, audiences: Collection[str], jti_cache: JtiCache
) -> None:
    now = time.time()
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise _refuse("client_assertion iss and sub must be the client id")
    aud = claims.get("aud")
    aud_list = aud if isinstance(aud, list) else [aud]
    if not any(a in audiences for a in aud_list):
        raise _refuse("client_assertion aud is not this authorization server")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise _refuse("client_assertion has no exp")
    if exp + LEEWAY <= now:
        raise _refuse("client_assertion has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf - LEEWAY > now:
        raise _refuse("client_assertion is not valid yet")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _refuse("client_assertion has no jti")
    if not jti_cache.add(client_id, jti, float(exp), now):
        raise _refuse("client_assertion jti was used before (replay)")
