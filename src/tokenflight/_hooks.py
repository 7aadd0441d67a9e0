"""Instrumentation hooks: what the manager reports about its token requests and slots.

A hook is any object with the four methods of `Instrumentation`; the manager calls them
synchronously, on its event loop, with a frozen event value. They are called off the hot
path only (a cached `get_token` calls none), and never with a secret or a token: events
carry the key, the client id and the token endpoint's host. A hook that raises is logged
and skipped; token delivery goes on.

`tokenflight.otel` is built on these hooks; Prometheus or structlog users can write their
own in a few lines.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, final, runtime_checkable
from urllib.parse import urlsplit

from ._errors import (
    ConfigurationError,
    MalformedTokenResponse,
    TokenEndpointUnavailable,
    TokenError,
    TokenRequestRefused,
)

if TYPE_CHECKING:
    from ._slot import SlotKey

__all__ = [
    "CooldownEntered",
    "EvictionReason",
    "FetchFinished",
    "FetchOutcome",
    "FetchStarted",
    "HookChain",
    "Instrumentation",
    "SlotEvicted",
    "endpoint_host",
    "next_fetch_id",
    "outcome_of",
]

logger = logging.getLogger("tokenflight")

#: How a fetch ended: a token; the IdP's refusal (see `error_code`); unreachable or
#: failing after retries; an unusable answer; anything else (configuration, resolver).
FetchOutcome = Literal["success", "refused", "unavailable", "malformed", "other"]

#: Why a slot was evicted: idle without a valid token; over `RefreshPolicy.max_slots`;
#: its tenant was registered again or unregistered.
EvictionReason = Literal["idle", "max_slots", "tenant_dropped"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class FetchStarted:
    """A token fetch for a key began (one per single flight, however many callers wait).

    Attributes:
        key: The slot key (tenant, audience, resource, scopes).
        client_id: The tenant's OAuth client id.
        endpoint_host: Host of the token endpoint (of the issuer before discovery).
        background: A refresh ahead of expiry, rather than a fetch callers wait for.
        fetch_id: Unique in the process (across managers); the same in the matching
            `FetchFinished`.
    """

    key: SlotKey
    client_id: str
    endpoint_host: str
    background: bool
    fetch_id: int


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class FetchFinished:
    """A token fetch ended, with a token or an error.

    Attributes:
        key: The slot key.
        client_id: The tenant's OAuth client id.
        endpoint_host: Host of the token endpoint.
        background: A refresh ahead of expiry.
        fetch_id: The `FetchStarted.fetch_id` of this fetch.
        duration: Seconds from start to end (the event loop's clock), retries included.
        outcome: How it ended (`FetchOutcome`).
        error_code: The RFC 6749 `error` of a refusal (`invalid_client`…), else None.
        error_type: The exception's class name on failure (`TokenEndpointUnavailable`).
        status_code: The last HTTP status of a failure, when there was one.
        from_store: The token came from a shared store, not from the token endpoint.
        attempts: Token requests sent, retries included (None: none was sent).
        retry_wait: Seconds waited between those attempts.
    """

    key: SlotKey
    client_id: str
    endpoint_host: str
    background: bool
    fetch_id: int
    duration: float
    outcome: FetchOutcome
    error_code: str | None = None
    error_type: str | None = None
    status_code: int | None = None
    from_store: bool = False
    attempts: int | None = None
    retry_wait: float | None = None


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CooldownEntered:
    """A failed fetch is remembered: callers get its error, without a request, for a while.

    Attributes:
        key: The slot key.
        client_id: The tenant's OAuth client id.
        seconds: How long the cooldown lasts.
        error_type: The exception's class name.
        failures: Failures in a row for this key (the cooldown grows with them).
    """

    key: SlotKey
    client_id: str
    seconds: float
    error_type: str
    failures: int


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SlotEvicted:
    """A slot (a key's token and state) was dropped.

    Attributes:
        key: The slot key.
        reason: `"idle"`, `"max_slots"` or `"tenant_dropped"`.
    """

    key: SlotKey
    reason: EvictionReason


@runtime_checkable
class Instrumentation(Protocol):
    """What a `TokenManager(instrumentation=...)` object implements.

    Every method is called synchronously on the manager's event loop: keep it quick and
    never block (hand work to a queue if it must do I/O). Exceptions are logged and ignored.
    """

    def fetch_started(self, event: FetchStarted) -> None:
        """A token fetch began (called in the task that started it)."""

    def fetch_finished(self, event: FetchFinished) -> None:
        """A token fetch ended (success or failure)."""

    def cooldown_entered(self, event: CooldownEntered) -> None:
        """A failure is remembered for `event.seconds`."""

    def slot_evicted(self, event: SlotEvicted) -> None:
        """A slot was evicted."""


#: Fetch ids, unique in the process, so that one hook may serve several managers.
next_fetch_id = itertools.count(1).__next__


def endpoint_host(url: str | None) -> str:
    """The host of a URL, without user info or port ("" when there is none)."""
    if not url:
        return ""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def outcome_of(error: TokenError | None) -> FetchOutcome:
    """The outcome name of a fetch that ended with `error` (None: success)."""
    if error is None:
        return "success"
    if isinstance(error, TokenRequestRefused):
        return "refused"
    if isinstance(error, TokenEndpointUnavailable):
        return "unavailable"
    if isinstance(error, MalformedTokenResponse):
        return "malformed"
    return "other"


@final
class HookChain:
    """The manager's hooks, called in order; each one's exception is logged and skipped.

    Falsy when empty, so that the manager builds no event when nobody listens.
    """

    __slots__ = ("hooks",)

    def __init__(self, instrumentation: Instrumentation | Sequence[Instrumentation] | None) -> None:
        if instrumentation is None:
            hooks: tuple[Instrumentation, ...] = ()
        elif isinstance(instrumentation, Sequence):
            hooks = tuple(instrumentation)
        else:
            hooks = (instrumentation,)
        for hook in hooks:
            if not isinstance(hook, Instrumentation):
                raise ConfigurationError(
                    f"instrumentation must implement fetch_started, fetch_finished, "
                    f"cooldown_entered and slot_evicted; {type(hook).__name__} does not"
                )
        self.hooks = hooks

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def fetch_started(self, event: FetchStarted) -> None:
        """Tell every hook that a fetch began."""
        for hook in self.hooks:
            try:
                hook.fetch_started(event)
            except Exception:
                _log_failure(hook, "fetch_started")

    def fetch_finished(self, event: FetchFinished) -> None:
        """Tell every hook that a fetch ended."""
        for hook in self.hooks:
            try:
                hook.fetch_finished(event)
            except Exception:
                _log_failure(hook, "fetch_finished")

    def cooldown_entered(self, event: CooldownEntered) -> None:
        """Tell every hook that a failure is remembered."""
        for hook in self.hooks:
            try:
                hook.cooldown_entered(event)
            except Exception:
                _log_failure(hook, "cooldown_entered")

    def slot_evicted(self, event: SlotEvicted) -> None:
        """Tell every hook that a slot was evicted."""
        for hook in self.hooks:
            try:
                hook.slot_evicted(event)
            except Exception:
                _log_failure(hook, "slot_evicted")


def _log_failure(hook: object, method: str) -> None:
    logger.exception("instrumentation hook %s.%s raised; ignored", type(hook).__qualname__, method)
