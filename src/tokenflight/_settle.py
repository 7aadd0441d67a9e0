"""What a finished flight leaves on its slot: the token or the failure, the counters,
the log records and the instrumentation events (synchronous, no I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._admission import RequestTimes
from ._config import RefreshPolicy, RetryPolicy
from ._endpoint import attempt_log
from ._errors import TokenEndpointUnavailable, TokenError
from ._hooks import CooldownEntered, FetchFinished, HookChain, endpoint_host, outcome_of
from ._slot import Slot, TokenFlight
from ._token import Token

__all__ = ["Outcomes", "attempts_sent", "log_fields", "too_short_lived"]

logger = logging.getLogger("tokenflight")


class Outcomes:
    """Settles flights on their slots, and tells the logs and the hooks."""

    def __init__(
        self,
        *,
        refresh: RefreshPolicy,
        retry: RetryPolicy,
        request_times: RequestTimes,
        hooks: HookChain,
        clock: Callable[[], float],
    ) -> None:
        self._refresh = refresh
        self._retry = retry
        self._request_times = request_times
        self._hooks = hooks
        self._clock = clock

    def settle(self, slot: Slot, flight: TokenFlight) -> None:
        """Record a flight's outcome on its slot and plan the next wake-up (no I/O)."""
        now = self._clock()
        slot.last_latency = max(0.0, now - flight.started_at)
        slot.latencies.append(slot.last_latency)
        token = flight.result
        if token is not None and now >= token.expires_at:
            # Expired on arrival (a lifetime shorter than this loop's latency): a failure,
            # with its cooldown, or every call would ask again at once.
            flight.result = None
            flight.error = too_short_lived(slot, token)
        if flight.result is not None:
            self._settle_token(slot, flight)
        elif flight.error is not None:
            self._settle_failure(slot, flight.error, now)
        if self._hooks:
            self.report_finish(slot, flight, now)

    def report_finish(self, slot: Slot, flight: TokenFlight, now: float) -> None:
        error = None if flight.result is not None else flight.error
        log = attempt_log.get()  # the flight's own task: its token request's log
        self._hooks.fetch_finished(
            FetchFinished(
                key=slot.key,
                client_id=slot.creds.client_id,
                endpoint_host=endpoint_host(slot.creds.token_url or slot.creds.issuer),
                background=flight.background,
                fetch_id=flight.fetch_id,
                duration=max(0.0, now - flight.started_at),
                outcome=outcome_of(error),
                error_code=getattr(error, "error", None),
                error_type=None if error is None else type(error).__name__,
                status_code=getattr(error, "status_code", None),
                from_store=flight.from_store,
                attempts=None if log is None else log.attempts,
                retry_wait=None if log is None else log.waited,
            )
        )

    def _settle_token(self, slot: Slot, flight: TokenFlight) -> None:
        assert flight.result is not None
        if flight.from_store:
            pass  # counted as a store hit; another process made the request
        elif flight.background:
            slot.refreshes += 1
            logger.debug(
                "refreshed the token of tenant %r (client_id %r) in the background",
                slot.key.tenant,
                slot.creds.client_id,
                extra=log_fields(slot, attempt=attempts_sent()),
            )
        else:
            slot.fetches += 1
        flight.result = slot.take_token(
            flight.result, self._refresh, margin=self._request_times.margin, now=self._clock()
        )

    def _settle_failure(self, slot: Slot, error: TokenError, now: float) -> None:
        cooldown = slot.take_failure(error, now, self._retry)
        logger.warning(
            "token request for tenant %r (client_id %r) failed, next try in %.1fs: %s",
            slot.key.tenant,
            slot.creds.client_id,
            cooldown,
            error.message,
            extra=log_fields(
                slot, status=getattr(error, "status_code", None), attempt=attempts_sent()
            ),
        )
        if self._hooks:
            self._hooks.cooldown_entered(
                CooldownEntered(
                    key=slot.key,
                    client_id=slot.creds.client_id,
                    seconds=cooldown,
                    error_type=type(error).__name__,
                    failures=slot.failures,
                )
            )


def too_short_lived(slot: Slot, token: Token) -> TokenEndpointUnavailable:
    """The error for tokens that expire before they reach their callers."""
    return TokenEndpointUnavailable(
        f"tokens from {slot.creds.token_url} expire before they can be used "
        f"(lifetime {token.expires_in:.3g}s): the provider's expires_in is too short, "
        "or this event loop is overloaded",
        endpoint=slot.creds.token_url or "",
    )


def log_fields(
    slot: Slot, *, status: int | None = None, attempt: int | None = None
) -> dict[str, object]:
    """Structured fields of a log record (`extra=`): never a secret or a token.

    `attempt` is the number of attempts the fetch's last token request sent.
    """
    return {
        "tenant": slot.key.tenant,
        "client_id": slot.creds.client_id,
        "endpoint_host": endpoint_host(slot.creds.token_url or slot.creds.issuer),
        "status": status,
        "attempt": attempt,
    }


def attempts_sent() -> int | None:
    """Attempts sent by this task's last token request (in a flight's own task)."""
    log = attempt_log.get()
    return None if log is None else log.attempts
