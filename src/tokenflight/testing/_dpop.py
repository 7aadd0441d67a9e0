"""DPoP (RFC 9449) at the bundled IdP: checking proofs at the token endpoint and resource.

A proof must be a JWS with ``typ: dpop+jwt``, an asymmetric ``alg``, the public ``jwk``
it verifies with, and claims ``jti`` (never seen before), ``htm`` and ``htu`` matching the
request, a recent ``iat``, the server's ``nonce`` when it demands one, and at a resource
``ath`` (the hash of the access token) and a key whose thumbprint the token is bound to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from ._http import Response, json_response

__all__ = ["DPoPChecker", "DPoPRefusal"]

_ALGS = frozenset({"ES256", "RS256", "PS256"})
#: Seconds a proof's `iat` may differ from the server's clock.
MAX_AGE = 60


class DPoPRefusal(Exception):
    """A DPoP proof that is refused: ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str, nonce: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.nonce = nonce

    def token_response(self) -> Response:
        """The token endpoint's 400 answer (RFC 9449 sections 5 and 8)."""
        headers = [("Cache-Control", "no-store")]
        if self.nonce is not None:
            headers.append(("DPoP-Nonce", self.nonce))
        body = {"error": self.error, "error_description": self.description}
        return json_response(400, body, headers)

    def resource_response(self) -> Response:
        """A resource's 401 answer with a DPoP challenge (RFC 9449 sections 7.1 and 9)."""
        headers = [("WWW-Authenticate", f'DPoP error="{self.error}", algs="ES256 RS256 PS256"')]
        if self.nonce is not None:
            headers.append(("DPoP-Nonce", self.nonce))
        return json_response(401, {"error": self.error}, headers)


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _ath(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class DPoPChecker:
    """Checks proofs; remembers seen ``jti`` values. Set ``nonce`` to demand one."""

    def __init__(self) -> None:
        #: When set, proofs must carry this nonce (given out in ``DPoP-Nonce``).
        self.nonce: str | None = None
        self._seen: set[str] = set()

    def check(
        self,
        proof: str | None,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        jkt: str | None = None,
    ) -> str:
        """Check a proof for one request; returns the key's thumbprint (``jkt``).

        Raises:
            DPoPRefusal: The proof is missing, wrong, replayed, or lacks the nonce.
        """
        if not proof or "," in proof:
            raise DPoPRefusal("invalid_dpop_proof", "exactly one DPoP proof is required")
        claims, key = _verify(proof)
        thumbprint: str = key.thumbprint()
        if jkt is not None and thumbprint != jkt:
            raise DPoPRefusal("invalid_dpop_proof", "the proof's key is not the token's key")
        if claims.get("htm") != method:
            raise DPoPRefusal("invalid_dpop_proof", "htm does not match the request method")
        if claims.get("htu") != url:
            raise DPoPRefusal("invalid_dpop_proof", "htu does not match the request URL")
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or abs(time.time() - iat) > MAX_AGE:
            raise DPoPRefusal("invalid_dpop_proof", "iat is missing or not recent")
        if access_token is not None and claims.get("ath") != _ath(access_token):
            raise DPoPRefusal("invalid_dpop_proof", "ath does not match the access token")
        if self.nonce is not None and claims.get("nonce") != self.nonce:
            raise DPoPRefusal("use_dpop_nonce", "a DPoP nonce is required", self.nonce)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or jti in self._seen:
            raise DPoPRefusal("invalid_dpop_proof", "jti is missing or was used before")
        self._seen.add(jti)
        return thumbprint


def _verify(proof: str) -> tuple[Mapping[str, Any], Any]:
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    try:
        header = _b64json(proof.split(".")[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise DPoPRefusal("invalid_dpop_proof", "the proof is not a JWS") from exc
    if not isinstance(header, dict) or header.get("typ") != "dpop+jwt":
        raise DPoPRefusal("invalid_dpop_proof", "typ must be dpop+jwt")
    alg, jwk = header.get("alg"), header.get("jwk")
    if alg not in _ALGS:
        raise DPoPRefusal("invalid_dpop_proof", f"alg {alg!r} is not accepted")
    if not isinstance(jwk, dict) or "d" in jwk:
        raise DPoPRefusal("invalid_dpop_proof", "jwk must be a public key")
    try:
        key = (ECKey if jwk.get("kty") == "EC" else RSAKey).import_key(jwk)
        token = jwt.decode(proof, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise DPoPRefusal("invalid_dpop_proof", "the proof's signature does not verify") from exc
    return token.claims, key
