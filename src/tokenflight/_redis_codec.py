"""How a token is written to a shared store: wall-clock times, JSON, optional Fernet.

A token in process memory counts time on the event loop's monotonic clock, which means
nothing to another process. An entry in the store carries wall-clock (`time.time()`)
times instead; `to_token` converts them back to the reading process's loop clock.

Entry format: ``b"tf1:" + JSON`` in the clear, or ``b"tf1e:" + Fernet token`` when
encryption keys are configured (`cryptography.fernet.MultiFernet`: written with the
newest key, readable with any).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from ._errors import ConfigurationError
from ._token import Token

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["Entry", "EntryCodec", "StoreDecryptionError", "fingerprint"]

logger = logging.getLogger("tokenflight")

PLAIN = b"tf1:"
SEALED = b"tf1e:"


class StoreDecryptionError(ConfigurationError):
    """A token in the shared store is encrypted with a key this process does not have.

    Check that every process of the fleet is given the same `encryption_keys`, newest
    first, and that a retired key stays in the list until the tokens written with it
    have expired (at most one token lifetime).
    """


def fingerprint(access_token: str) -> bytes:
    """A short digest that tells two access tokens apart without holding either."""
    return hashlib.blake2b(access_token.encode(), digest_size=16).digest()


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A token as stored: times are wall-clock seconds (`time.time()`)."""

    token: Token
    obtained_wall: float
    expires_wall: float

    @classmethod
    def from_token(cls, token: Token, *, loop_now: float, wall_now: float) -> Entry:
        """Anchor a loop-clock token on the wall clock."""
        offset = wall_now - loop_now
        return cls(
            token=token,
            obtained_wall=token.obtained_at + offset,
            expires_wall=token.expires_at + offset,
        )

    def remaining(self, wall_now: float) -> float:
        """Seconds until the token expires."""
        return self.expires_wall - wall_now

    def to_token(self, *, loop_now: float, wall_now: float) -> Token:
        """The token with its times moved onto this process's loop clock."""
        offset = loop_now - wall_now
        t = self.token
        return Token(
            access_token=t.access_token,
            token_type=t.token_type,
            expires_in=t.expires_in,
            obtained_at=self.obtained_wall + offset,
            expires_at=self.expires_wall + offset,
            scope=t.scope,
            extra=t.extra,
        )


class EntryCodec:
    """Turns entries into bytes and back, encrypting when keys are given."""

    def __init__(self, encryption_keys: Sequence[str | bytes] | None) -> None:
        self._fernet = None if encryption_keys is None else _multi_fernet(encryption_keys)
        self._warned_plain = False

    @property
    def encrypted(self) -> bool:
        """Whether entries are written encrypted."""
        return self._fernet is not None

    def encode(self, entry: Entry) -> bytes:
        """Serialize (and encrypt, with the newest key) an entry."""
        t = entry.token
        data: dict[str, Any] = {
            "access_token": t.access_token,
            "token_type": t.token_type,
            "expires_in": t.expires_in,
            "obtained": entry.obtained_wall,
            "expires": entry.expires_wall,
            "scope": None if t.scope is None else list(t.scope),
            "extra": dict(t.extra),
        }
        body = json.dumps(data, separators=(",", ":"), default=str).encode()
        if self._fernet is None:
            return PLAIN + body
        return SEALED + self._fernet.encrypt(body)

    def decode(self, raw: bytes | str) -> Entry | None:
        """Read an entry; None when it is unusable (and should be replaced).

        Raises:
            StoreDecryptionError: The entry is encrypted and no configured key opens it.
        """
        if isinstance(raw, str):  # a client made with decode_responses=True
            raw = raw.encode()
        if raw.startswith(SEALED):
            body = self._decrypt(raw[len(SEALED) :])
        elif raw.startswith(PLAIN):
            if self._fernet is not None:
                if not self._warned_plain:
                    self._warned_plain = True
                    logger.warning(
                        "found an unencrypted token in the shared store while encryption_keys "
                        "are set; ignoring it (it is replaced by an encrypted one)"
                    )
                return None
            body = raw[len(PLAIN) :]
        else:
            return None
        return _entry_from_json(body)

    def _decrypt(self, sealed: bytes) -> bytes:
        if self._fernet is None:
            raise StoreDecryptionError(
                "a token in the shared store is encrypted but this RedisTokenStore has no "
                "encryption_keys; give it the same keys as the rest of the fleet"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            raise StoreDecryptionError(
                "a token in the shared store cannot be decrypted with any of the configured "
                "encryption_keys; check that every process has the same keys, newest first, "
                "and that retired keys stay listed until their tokens expire"
            ) from None


def _entry_from_json(body: bytes) -> Entry | None:
    try:
        data = json.loads(body)
        scope = data["scope"]
        extra = data["extra"]
        token = Token(
            access_token=str(data["access_token"]),
            token_type=str(data["token_type"]),
            expires_in=float(data["expires_in"]),
            obtained_at=0.0,
            expires_at=0.0,
            scope=None if scope is None else tuple(str(s) for s in scope),
            extra=extra if isinstance(extra, dict) else {},
        )
        return Entry(
            token=token,
            obtained_wall=float(data["obtained"]),
            expires_wall=float(data["expires"]),
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        logger.warning("ignoring a malformed token entry in the shared store")
        return None


def _multi_fernet(keys: Sequence[str | bytes]) -> MultiFernet:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise ConfigurationError(
            "encryption_keys must be a list of Fernet keys, newest first (not a single key)"
        )
    if not keys:
        raise ConfigurationError("encryption_keys must hold at least one key (or be None)")
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "encrypting tokens at rest needs the cryptography package: "
            "pip install 'tokenflight[redis]'"
        ) from exc
    fernets = []
    for index, key in enumerate(keys):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"encryption_keys[{index}] is not a Fernet key (32 url-safe base64-encoded "
                "bytes); make one with cryptography.fernet.Fernet.generate_key()"
            ) from None
    return MultiFernet(fernets)
