"""How a token is written to a shared store: wall-clock times, JSON, optional Fernet.

A token in process memory counts time on the event loop's monotonic clock, which means
nothing to another process. An entry in the store carries wall-clock (`time.time()`)
times instead; `to_token` converts them back to the reading process's loop clock.

Entry format: ``b"tf1:" + JSON`` in the clear, or ``b"tf1e:" + Fernet token`` when
encryption keys are configured (`cryptography.fernet.MultiFernet`: written with the
newest key, readable with any).

A value read back from the store is hostile input, like a token response: `decode`
refuses one over `MAX_ENTRY_BYTES` before looking inside, and validates every field
before building a token. It tells three outcomes apart: an `Entry`; `CorruptEntry` (not
an entry this library wrote: the store treats it as absent and overwrites it); and
`StoreDecryptionError` (a well-formed entry sealed with a key this process lacks: other
processes may read it, so the store leaves it alone).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from ._errors import ConfigurationError
from ._token import Token, bounded_extra, vschar_problem

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = [
    "MAX_ENTRY_BYTES",
    "CorruptEntry",
    "Entry",
    "EntryCodec",
    "StoreDecryptionError",
    "fingerprint",
]

PLAIN = b"tf1:"
SEALED = b"tf1e:"

#: Stored values longer than this are refused before they are decoded.
MAX_ENTRY_BYTES: Final = 64 * 1024

# A Fernet token: version byte, 8-byte timestamp, 16-byte IV, AES-CBC blocks, 32-byte HMAC.
_FERNET_VERSION = 0x80
_FERNET_OVERHEAD = 1 + 8 + 16 + 32
_AES_BLOCK = 16


class StoreDecryptionError(ConfigurationError):
    """A token in the shared store is encrypted with a key this process does not have.

    Check that every process of the fleet is given the same `encryption_keys`, newest
    first, and that a retired key stays in the list until the tokens written with it
    have expired (at most one token lifetime).
    """


class CorruptEntry(Exception):
    """A stored value that is not a well-formed entry (internal: the store ignores it).

    The message says what is wrong with it, never what it holds.
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
            obtained_at_wall=self.obtained_wall,
        )


class EntryCodec:
    """Turns entries into bytes and back, encrypting when keys are given."""

    def __init__(self, encryption_keys: Sequence[str | bytes] | None) -> None:
        self._fernet = None if encryption_keys is None else _multi_fernet(encryption_keys)

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
        """Read an entry; None when there is none (an empty value).

        Raises:
            CorruptEntry: The value is not an entry this library wrote (too large, an
                unknown format, bad JSON or fields, an unencrypted entry while keys are
                set, a sealed entry that is not a Fernet token).
            StoreDecryptionError: The entry is a Fernet token that no configured key
                opens (or this codec has no keys).
        """
        if isinstance(raw, str):  # a client made with decode_responses=True
            raw = raw.encode()
        if not raw:
            return None
        if len(raw) > MAX_ENTRY_BYTES:
            raise CorruptEntry(f"it is over {MAX_ENTRY_BYTES} bytes")
        if raw.startswith(SEALED):
            body = self._decrypt(raw[len(SEALED) :])
        elif raw.startswith(PLAIN):
            if self._fernet is not None:
                raise CorruptEntry("it is unencrypted while encryption_keys are set")
            body = raw[len(PLAIN) :]
        else:
            raise CorruptEntry("its format is unknown")
        return _entry_from_json(body)

    def _decrypt(self, sealed: bytes) -> bytes:
        if not _is_fernet_token(sealed):
            raise CorruptEntry("it is marked encrypted but is not a Fernet token")
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


def _is_fernet_token(sealed: bytes) -> bool:
    """Whether `sealed` has a Fernet token's shape (its HMAC is checked when decrypting)."""
    try:
        data = base64.urlsafe_b64decode(sealed)
    except (binascii.Error, ValueError):
        return False
    blocks = len(data) - _FERNET_OVERHEAD
    return len(data) > _FERNET_OVERHEAD and data[0] == _FERNET_VERSION and blocks % _AES_BLOCK == 0


def _entry_from_json(body: bytes) -> Entry:
    """Validate a decoded entry field by field; CorruptEntry names the first bad one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CorruptEntry("it is not JSON (or nests too deep)") from None
    if not isinstance(data, dict):
        raise CorruptEntry("it is not a JSON object")
    access_token = data.get("access_token")
    token_type = data.get("token_type")
    if not isinstance(access_token, str) or not access_token:
        raise CorruptEntry("access_token is not a non-empty string")
    if not isinstance(token_type, str) or not token_type:
        raise CorruptEntry("token_type is not a non-empty string")
    for name, value in (("access_token", access_token), ("token_type", token_type)):
        problem = vschar_problem(value)  # a planted CR LF would reach a request header
        if problem is not None:
            raise CorruptEntry(f"{name} {problem}")
    expires_in = _finite(data, "expires_in")
    obtained = _finite(data, "obtained")
    expires = _finite(data, "expires")
    if expires_in <= 0 or expires <= obtained:
        raise CorruptEntry("its lifetime is not positive")
    scope = data.get("scope")
    if scope is not None and not (
        isinstance(scope, list) and all(isinstance(s, str) for s in scope)
    ):
        raise CorruptEntry("scope is not a list of strings")
    extra = data.get("extra")
    if not isinstance(extra, dict):
        raise CorruptEntry("extra is not a JSON object")
    extra = bounded_extra(extra.items())  # scalars only, about 4 KiB, as a response's
    token = Token(
        access_token=access_token,
        token_type=token_type,
        expires_in=expires_in,
        obtained_at=0.0,
        expires_at=0.0,
        scope=None if scope is None else tuple(scope),
        extra=extra,
    )
    return Entry(token=token, obtained_wall=obtained, expires_wall=expires)


def _finite(data: Mapping[str, Any], name: str) -> float:
    """A JSON number as a finite float (a 400-digit integer or NaN is refused)."""
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CorruptEntry(f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise CorruptEntry(f"{name} is out of range") from None
    if not math.isfinite(number):
        raise CorruptEntry(f"{name} is not finite")
    return number


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
