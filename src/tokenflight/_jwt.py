"""JOSE helpers on joserfc (the optional `jwt` extra): signing keys and client assertions.

joserfc is imported lazily, so tokenflight works without it until a configuration asks
for `private_key_jwt`, `client_secret_jwt` or DPoP.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ._errors import ConfigurationError

__all__ = [
    "ASSERTION_TYPE",
    "SigningKey",
    "certificate_thumbprint",
    "client_assertion",
    "load_private_key",
    "require_joserfc",
    "secret_key",
]

#: `client_assertion_type` of RFC 7523 section 2.2.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_KEY_ALGS = {"RSA": ("RS256", "PS256"), "EC": ("ES256",)}
_DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256"}


def require_joserfc(feature: str) -> ModuleType:
    """Import joserfc, or raise a ConfigurationError saying which extra to install."""
    try:
        import joserfc.jwt
    except ImportError as exc:
        raise ConfigurationError(
            f"{feature} needs joserfc and cryptography: pip install 'tokenflight[jwt]'"
        ) from exc
    return joserfc


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A parsed signing key with the algorithm and key id it signs with."""

    key: Any = field(repr=False)
    alg: str
    kid: str | None
    #: The `x5t#S256` header: the SHA-256 thumbprint of the key's certificate.
    x5t_s256: str | None = None


def load_private_key(
    value: str | Mapping[str, Any], *, key_id: str | None, alg: str | None
) -> SigningKey:
    """Parse a PEM string or a JWK dict holding an RSA or EC (P-256) private key.

    Raises:
        ConfigurationError: The key cannot be read, is public only, or does not fit `alg`.
    """
    require_joserfc("private_key_jwt")
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    jwk = dict(value) if isinstance(value, Mapping) else None
    if jwk is None and not isinstance(value, str):
        raise ConfigurationError("PrivateKeyJWT key must be a PEM string or a JWK dict")
    kty = jwk.get("kty") if jwk is not None else ("EC" if "EC " in str(value) else None)
    key: Any = None
    errors: list[str] = []
    for key_cls in (ECKey,) if kty == "EC" else (RSAKey, ECKey):
        try:
            key = key_cls.import_key(jwk if jwk is not None else str(value))
            break
        except (JoseError, ValueError, TypeError) as exc:
            errors.append(type(exc).__name__)
    if key is None:
        raise ConfigurationError(
            "PrivateKeyJWT key could not be read as an RSA or EC private key (PEM or JWK); "
            f"{'/'.join(errors)}"
        )
    if not key.is_private:
        raise ConfigurationError("PrivateKeyJWT key holds a public key: give the private key")
    key_type = key.key_type
    if key_type == "EC" and key.curve_name != "P-256":
        raise ConfigurationError(
            f"PrivateKeyJWT EC key must be on P-256 for ES256, not {key.curve_name}"
        )
    alg = alg or _DEFAULT_ALG[key_type]
    if alg not in _KEY_ALGS[key_type]:
        raise ConfigurationError(
            f"PrivateKeyJWT alg {alg!r} does not fit a {key_type} key; "
            f"use one of {_KEY_ALGS[key_type]}"
        )
    kid = key_id if key_id is not None else (jwk or {}).get("kid")
    return SigningKey(key, alg, kid if isinstance(kid, str) else None)


def secret_key(secret: str, *, key_id: str | None, alg: str | None) -> SigningKey:
    """An HMAC key made of the client secret, for `client_secret_jwt`."""
    require_joserfc("client_secret_jwt")
    from joserfc.jwk import OctKey

    alg = alg or "HS256"
    if alg != "HS256":
        raise ConfigurationError(f"client_secret_jwt signs with HS256, not {alg!r}")
    if len(secret.encode("utf-8")) < 32:
        raise ConfigurationError(
            "client_secret_jwt needs a client secret of at least 32 bytes: HS256 keys must be "
            "as long as the hash (RFC 7518 section 3.2)"
        )
    return SigningKey(OctKey.import_key(secret.encode("utf-8")), alg, key_id)


def certificate_thumbprint(pem: str, signing: SigningKey) -> str:
    """The `x5t#S256` of a PEM certificate (RFC 7515 section 4.1.8), checked against the key.

    Raises:
        ConfigurationError: The certificate cannot be read, or is not the key's.
    """
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if not isinstance(pem, str):
        raise ConfigurationError("certificate must be a PEM string")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigurationError("certificate is not a PEM X.509 certificate") from exc
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ours = signing.key.as_der(private=False)
    if cert.public_key().public_bytes(*spki) != ours:
        raise ConfigurationError("certificate does not hold the public half of the private key")
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def client_assertion(signing: SigningKey, *, client_id: str, audience: str, lifetime: float) -> str:
    """A new signed client assertion (RFC 7523 section 3): unique `jti`, short `exp`.

    `iat` and `exp` are wall-clock seconds, as the server compares them with its own clock.
    """
    from joserfc import jwt

    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(18),
        "iat": now,
        "exp": now + max(1, int(lifetime)),
    }
    header: dict[str, Any] = {"alg": signing.alg, "typ": "JWT"}
    if signing.kid is not None:
        header["kid"] = signing.kid
    if signing.x5t_s256 is not None:
        header["x5t#S256"] = signing.x5t_s256
    return jwt.encode(header, claims, signing.key, algorithms=[signing.alg])
