"""Keeping secrets out of messages, reprs and traceback locals.

Error reporters (Sentry, `traceback.TracebackException(capture_locals=True)`) record the
`repr` of every local of every frame on a traceback, causes and contexts included. So a
value that carries a secret (a request's form and headers, a token response's body and
fields) lives in a container whose `repr` hides it, and frames of other libraries that
hold a request's credentials are cut from the tracebacks of the errors they raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, urlsplit

__all__ = ["HiddenBytes", "RedactedDict", "cut_frames_holding", "redact_url"]

#: Keys whose values a `RedactedDict` shows: never a credential, useful when debugging.
_SHOWN = frozenset(
    {
        "accept",
        "accept-encoding",
        "audience",
        "client_assertion_type",
        "client_id",
        "error",
        "expires_in",
        "grant_type",
        "resource",
        "scope",
        "token_type",
    }
)


class RedactedDict(dict[str, Any]):
    """A dict whose `repr` shows only the values of known harmless keys."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = (
            f"{key!r}: {value!r}" if str(key).lower() in _SHOWN else f"{key!r}: '***'"
            for key, value in self.items()
        )
        return "{" + ", ".join(shown) + "}"

    __str__ = __repr__


class HiddenBytes(bytes):
    """Bytes whose `repr` gives only their length (a response body may carry tokens)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, hidden>"

    __str__ = __repr__


def redact_url(url: object) -> str:
    """`url` for a message: a password in its userinfo shown as `***`.

    Anything that does not parse as a URL is shown with everything before an `@` masked.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        _, at, tail = text.rpartition("@")
        return f"***@{tail}" if at else text
    if password is None:
        return text
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return SplitResult(
        parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment
    ).geturl()


def cut_frames_holding(exc: BaseException, secrets: Iterable[str]) -> None:
    """Drop, from the tracebacks of `exc` and everything it chains to, each frame whose
    locals show one of `secrets` in their `repr`.

    The exceptions themselves (types, messages, causes) are kept, and so is every other
    frame: only the references to the frames go, nothing is closed or cleared.
    """
    needles = [secret for secret in secrets if len(secret) >= 8]
    if not needles:
        return
    for current in exception_chain(exc):
        current.__traceback__ = _without(current.__traceback__, needles)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it chains to (`__cause__`, `__context__`), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
        yield current


def _without(tb: TracebackType | None, needles: list[str]) -> TracebackType | None:
    kept = [entry for entry in _entries(tb) if not _holds(entry, needles)]
    for entry, following in zip(kept, [*kept[1:], None], strict=True):
        entry.tb_next = following
    return kept[0] if kept else None


def _entries(tb: TracebackType | None) -> list[TracebackType]:
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return entries


def _holds(entry: TracebackType, needles: list[str]) -> bool:
    for value in entry.tb_frame.f_locals.values():
        try:
            text = repr(value)
        except Exception:  # a repr that fails could show anything when it works: cut
            return True
        if any(needle in text for needle in needles):
            return True
    return False
