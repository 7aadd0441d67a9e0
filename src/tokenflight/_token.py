"""The token value, and the parser that turns a token endpoint's answer into one."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Final, final

import anyio

from ._errors import MalformedTokenResponse, TokenRequestRefused
from ._redact import RedactedDict

__all__ = ["Token", "parse_retry_after", "parse_token_response"]

logger = logging.getLogger("tokenflight")

SUPPORTED_TOKEN_TYPES = frozenset({"bearer"})

#: `Token.extra` keeps scalar fields only, up to about this many characters in all ...
MAX_EXTRA_BYTES: Final = 4096
#: ... and cuts each of its strings (and skips each longer name) at this length.
MAX_EXTRA_STRING: Final = 1024


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """An access token and when it stops being usable.

    `obtained_at` and `expires_at` are on the clock of the event loop that fetched the
    token (`anyio.current_time()`, monotonic), which the manager schedules refreshes on.
    Trio's clock starts at a random offset and a `SyncTokenManager` caller's thread has
    no loop, so the token also records the wall-clock time it was obtained:
    `remaining()` and `expires_at_wall` count from that.

    Attributes:
        access_token: The token itself. Never shown in `repr`.
        token_type: As the provider spelled it, such as `Bearer`.
        expires_in: The lifetime tokenflight uses, in seconds, after clamping.
        obtained_at: Loop time read just before the request was sent.
        expires_at: `obtained_at + expires_in`.
        obtained_at_wall: The same moment as `obtained_at` in `time.time()` seconds;
            `None` for a token built by hand (then the wall time is derived from the
            current loop clock, or `time.monotonic()` outside a loop).
        scope: The granted scopes, when the provider said.
        extra: The response's other scalar fields (strings, numbers, booleans, nulls),
            about 4 KiB at most; nested objects and lists are dropped. Never shown in
            `repr`.
    """

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: float
    obtained_at: float
    expires_at: float
    scope: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    obtained_at_wall: float | None = field(default=None, compare=False)

    def remaining(self) -> float:
        """Seconds until the token expires (negative once it has), on the wall clock.

        Right in any thread and under any event loop, a `SyncTokenManager(backend="trio")`
        caller's included.
        """
        return self.expires_at_wall - time.time()

    @property
    def expires_at_wall(self) -> float:
        """When the token expires as `time.time()` seconds (for logs, other processes)."""
        if self.obtained_at_wall is not None:
            return self.obtained_at_wall + self.expires_in
        try:  # a token built by hand: only its loop-clock times are known
            now = anyio.current_time()
        except RuntimeError:  # no event loop in this thread
            now = time.monotonic()
        return time.time() + self.expires_at - now


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a `Retry-After` header: delay seconds or an HTTP-date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: "²" is a digit too
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def _jwt_exp_seconds(access_token: str) -> float | None:
    """Seconds until a JWT access token's `exp`, without checking the signature."""
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    try:
        left = float(exp) - time.time()  # an int too large for a float is no usable exp
    except OverflowError:
        return None
    return left if math.isfinite(left) else None


def _lifetime(raw: object, access_token: str, *, default: float, maximum: float) -> float:
    """Decide a token's lifetime from `expires_in`, falling back to a JWT `exp`, then a default."""
    value: float | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = float(min(raw, 2**63))  # absurdly large ints are clamped below, not an error
    elif isinstance(raw, float):
        value = raw
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value) or value <= 0:
        jwt_left = _jwt_exp_seconds(access_token)
        if jwt_left is not None and jwt_left > 0:
            value = jwt_left
        else:
            if raw is not None:
                logger.warning("token response has unusable expires_in; assuming %ss", default)
            value = default
    return min(value, maximum)


def _json_object(body: bytes) -> RedactedDict | None:
    """The body's JSON object, in a dict whose repr hides the tokens; None when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return RedactedDict(data) if isinstance(data, dict) else None


def vschar_problem(value: str) -> str | None:
    """What makes `value` no RFC 6749 `1*VSCHAR` (%x20-7E), without quoting it; None if fine."""
    if not value:
        return "is empty"
    for position, char in enumerate(value):
        if not " " <= char <= "~":
            names = {"\r": "a CR", "\n": "an LF", "\0": "a NUL", "\x7f": "a DEL"}
            what = names.get(char) or (
                "a control character" if ord(char) < 0x20 else "a non-ASCII character"
            )
            return (
                f"holds {what} (U+{ord(char):04X}) at position {position}, outside the "
                "printable ASCII that RFC 6749 allows (VSCHAR, %x20-7E)"
            )
    return None


def _token_problem(data: Mapping[str, Any], token_types: frozenset[str]) -> str | None:
    """Why `data` is no usable token response, never quoting the token; None if it is."""
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        return "without an access_token (missing, empty, blank or not a string)"
    problem = vschar_problem(access_token)
    if problem is not None:
        return f"with an access_token that {problem}"
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str):
        return f"with a token_type that is not a string (supported: {sorted(token_types)})"
    problem = vschar_problem(token_type)
    if problem is not None:
        return f"with a token_type that {problem}"
    if token_type.lower() not in token_types:
        return (
            f"with a token of type {token_type[:40]!r}, which tokenflight does not support "
            f"(supported: {sorted(token_types)})"
        )
    return None


def bounded_extra(items: Iterable[tuple[object, object]]) -> dict[str, Any]:
    """The fields of `items` worth keeping in `Token.extra`, within `MAX_EXTRA_BYTES`.

    Only scalar top-level fields (str, int, float, bool, None) are kept, strings cut to
    `MAX_EXTRA_STRING` characters, until the kept names and values add up to about
    `MAX_EXTRA_BYTES`: a provider (or a planted store entry) cannot make every cached
    token hold megabytes of nested lists.
    """
    kept: dict[str, Any] = {}
    total = 0
    for name, value in items:
        if not isinstance(name, str) or len(name) > MAX_EXTRA_STRING:
            continue
        if isinstance(value, str):
            value = value[:MAX_EXTRA_STRING]
            size = len(value)
        elif value is None or isinstance(value, (bool, float)):
            size = 8
        elif isinstance(value, int):
            if value.bit_length() > 64:
                continue
            size = 8
        else:
            continue
        total += len(name) + size
        if total > MAX_EXTRA_BYTES:
            break
        kept[name] = value
    return kept


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def parse_error(status: int, body: bytes, endpoint: str) -> TokenRequestRefused:
    """Turn a 4xx answer into the typed refusal, with the RFC 6749 error when there is one."""
    data: Mapping[str, Any] = _json_object(body) or {}
    error = _text(data, "error")
    description = _text(data, "error_description")
    if error is None:
        message = (
            f"token endpoint {endpoint} refused the request with HTTP {status} "
            "and no RFC 6749 error code; check the token URL and the client credentials"
        )
    else:
        message = f"token endpoint {endpoint} refused the request: {error}"
        if description:
            message += f" ({description[:200]})"
    return TokenRequestRefused(
        message,
        error=error,
        error_description=description,
        error_uri=_text(data, "error_uri"),
        status_code=status,
    )


def parse_token_response(
    body: bytes,
    *,
    status: int = 200,
    started_at: float,
    endpoint: str = "the token endpoint",
    default_lifetime: float = 300.0,
    max_lifetime: float = 86400.0,
    token_types: frozenset[str] = SUPPORTED_TOKEN_TYPES,
) -> Token:
    """Parse a successful (2xx) token response body into a `Token`.

    Args:
        body: The response body.
        status: The HTTP status, for error messages.
        started_at: Loop time read before the request was sent; expiry counts from it.
        endpoint: The token URL, for error messages.
        default_lifetime: Lifetime when `expires_in` is missing or unusable and the token
            is not a JWT with `exp`.
        max_lifetime: Clamp for longer lifetimes.
        token_types: Lower-case token types accepted.

    Raises:
        MalformedTokenResponse: The body is not a JSON object with a usable token.
    """
    data = _json_object(body)
    if data is None:
        raise MalformedTokenResponse(
            f"token endpoint {endpoint} answered HTTP {status} with a body that is not a JSON "
            "object; check that token_url points at the token endpoint",
            status_code=status,
        )
    problem = _token_problem(data, token_types)
    if problem is not None:
        raise MalformedTokenResponse(
            f"token endpoint {endpoint} answered HTTP {status} {problem}", status_code=status
        )
    return _token(data, started_at, default_lifetime=default_lifetime, max_lifetime=max_lifetime)


def _token(
    data: Mapping[str, Any], started_at: float, *, default_lifetime: float, max_lifetime: float
) -> Token:
    """The `Token` of a checked response (nothing here raises, so no frame of it is kept)."""
    access_token = data["access_token"]
    lifetime = _lifetime(
        data.get("expires_in"), access_token, default=default_lifetime, maximum=max_lifetime
    )
    scope = data.get("scope")
    extra = bounded_extra(
        (k, v)
        for k, v in data.items()
        if k not in ("access_token", "token_type", "expires_in", "scope")
    )
    wall_now = time.time()
    try:  # the wall time of `started_at`: now, less the request's time on the loop clock
        elapsed = anyio.current_time() - started_at
    except RuntimeError:  # parsed outside an event loop
        elapsed = 0.0
    return Token(
        access_token=access_token,
        token_type=data.get("token_type", "Bearer"),
        expires_in=lifetime,
        obtained_at=started_at,
        expires_at=started_at + lifetime,
        scope=tuple(scope.split()) if isinstance(scope, str) else None,
        extra=extra,
        obtained_at_wall=wall_now - min(max(elapsed, 0.0), lifetime),
    )
