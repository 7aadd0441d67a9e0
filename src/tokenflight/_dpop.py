"""DPoP (RFC 9449): proof-of-possession tokens bound to a key pair per slot.

Each slot with `ClientCredentials(dpop=True)` gets its own P-256 key pair. Every token
request carries a fresh proof (`htm`, `htu`, `iat`, `jti`), and so does every resource
request, which adds `ath` (the hash of the access token). A server's `DPoP-Nonce` is
remembered per origin; a `use_dpop_nonce` answer is retried once with the new nonce.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping
from typing import Any, final
from urllib.parse import urlsplit, urlunsplit

from ._jwt import require_joserfc

__all__ = ["DPoPProver", "NonceBook", "access_token_hash", "htu_of"]

#: Token types accepted from a token endpoint when DPoP was asked for.
DPOP_TOKEN_TYPES = frozenset({"bearer", "dpop"})


def htu_of(url: str) -> str:
    """The `htu` of a URL: without query and fragment (RFC 9449 section 4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def access_token_hash(access_token: str) -> str:
    """`ath`: base64url (unpadded) SHA-256 of the access token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@final
class NonceBook:
    """The latest `DPoP-Nonce` of each server (origin), shared by a manager's slots."""

    __slots__ = ("_nonces",)

    def __init__(self) -> None:
        self._nonces: dict[str, str] = {}

    def get(self, url: str) -> str | None:
        """The nonce to send to this URL's server, if it gave one."""
        return self._nonces.get(_origin(url))

    def observe(self, url: str, headers: Mapping[str, str]) -> bool:
        """Remember a response's `DPoP-Nonce`; True when it is new for that server."""
        nonce = headers.get("dpop-nonce")
        if not nonce or len(nonce) > 1024:
            return False
        origin = _origin(url)
        if self._nonces.get(origin) == nonce:
            return False
        self._nonces[origin] = nonce
        return True


@final
class DPoPProver:
    """Signs DPoP proofs with one key pair (made per slot; never shown in `repr`)."""

    __slots__ = ("_key", "_public", "nonces", "thumbprint")

    def __init__(self, nonces: NonceBook) -> None:
        require_joserfc("DPoP")
        from joserfc.jwk import ECKey

        self._key = ECKey.generate_key("P-256", private=True)
        self._public: dict[str, Any] = dict(self._key.as_dict(private=False))
        #: The JWK SHA-256 thumbprint (`jkt`) tokens are bound to.
        self.thumbprint: str = self._key.thumbprint()
        self.nonces = nonces

    def __repr__(self) -> str:
        return f"<DPoPProver jkt={self.thumbprint!r}>"

    def proof(self, method: str, url: str, *, access_token: str | None = None) -> str:
        """A new proof for one request; with the server's nonce when it gave one."""
        from joserfc import jwt

        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(18),
            "htm": method.upper(),
            "htu": htu_of(url),
            "iat": int(time.time()),
        }
        nonce = self.nonces.get(url)
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self._public}
        return jwt.encode(header, claims, self._key, algorithms=["ES256"])
