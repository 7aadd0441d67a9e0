"""OpenTelemetry metrics and spans for tokenflight, built on its instrumentation hooks.

Install with `pip install 'tokenflight[otel]'` (only `opentelemetry-api` is needed at run
time; your application brings the SDK and exporters)::

    from tokenflight.otel import OpenTelemetryInstrumentation

    otel = OpenTelemetryInstrumentation()  # the global meter and tracer providers
    async with TokenManager(instrumentation=otel) as tokens:
        otel.observe(tokens)  # cache hits and misses, slots, fetches in flight
        ...

Instruments (names are stable; attributes in parentheses):

- `tokenflight.token.requests` (counter, `{request}`): fetches ended, by
  `tokenflight.outcome` (`success`, `refused`, `unavailable`, `malformed`, `other`),
  `tokenflight.oauth.error` (the RFC 6749 code of a refusal), `error.type`,
  `tokenflight.background`, `tokenflight.from_store`, `server.address`.
- `tokenflight.token.fetch.duration` (histogram, `s`): the same fetches' durations.
- `tokenflight.refreshes` (counter, `{refresh}`): background refreshes ended, by outcome.
- `tokenflight.cooldowns` (counter, `{cooldown}`): failures remembered, by `error.type`.
- `tokenflight.evictions` (counter, `{eviction}`): slots evicted, by
  `tokenflight.eviction.reason` (`idle`, `max_slots`, `tenant_dropped`).
- `tokenflight.cache.hits`, `tokenflight.cache.misses`, `tokenflight.single_flight.joins`,
  `tokenflight.stale_served` (observable counters), `tokenflight.admission.waiting`,
  `tokenflight.slots` (observable up-down counter, `{slot}`) and
  `tokenflight.token.fetch.active` (observable up-down counter, `{fetch}`): read from
  `stats()` of the managers given to `observe()`, summed.

With `tenant_attribute=True` the event instruments and spans also carry
`tokenflight.tenant` (one time series per tenant: mind the cardinality).

Spans: `tokenflight.fetch_token` (kind INTERNAL) from the start of a fetch to its end,
a child of the span current where the fetch started (the first caller's), with
`server.address`, `tokenflight.client_id`, `tokenflight.background`, `tokenflight.outcome`
and on failure `error.type`, `tokenflight.oauth.error`, `http.response.status_code`,
and an ERROR status. No attribute ever holds a secret or a token.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "tokenflight.otel needs opentelemetry-api: pip install 'tokenflight[otel]'"
    ) from exc

from ._hooks import CooldownEntered, FetchFinished, FetchStarted, SlotEvicted

if TYPE_CHECKING:
    from ._manager import TokenManager
    from ._stats import ManagerStatistics

__all__ = ["OpenTelemetryInstrumentation"]

#: The instrumentation scope: the meter's and the tracer's name.
SCOPE = "tokenflight"

#: Histogram bucket boundaries for fetch durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_Attributes = dict[str, str | bool | int]
ObservableCallback = Callable[[CallbackOptions], Iterable[Observation]]


#: Observable instruments read from `ManagerStatistics`: (name, reading, unit, description).
_Reading = tuple[str, "Callable[[ManagerStatistics], int]", str, str]
_COUNTED: tuple[_Reading, ...] = (
    (
        "tokenflight.cache.hits",
        lambda s: s.total.hits,
        "{call}",
        "get_token calls answered from the cache",
    ),
    (
        "tokenflight.cache.misses",
        lambda s: s.total.misses,
        "{call}",
        "get_token calls that started or joined a fetch",
    ),
    (
        "tokenflight.single_flight.joins",
        lambda s: s.total.joins,
        "{call}",
        "Misses that joined a fetch already in flight",
    ),
    (
        "tokenflight.stale_served",
        lambda s: s.total.stale_served,
        "{refresh}",
        "Failed refreshes while the current token stayed in use (serve stale)",
    ),
)
_GAUGED: tuple[_Reading, ...] = (
    ("tokenflight.slots", lambda s: s.slots, "{slot}", "Live slots"),
    (
        "tokenflight.admission.waiting",
        lambda s: s.admission_waiting,
        "{request}",
        "Authorized requests waiting at the manager's shared admission gate",
    ),
    (
        "tokenflight.token.fetch.active",
        lambda s: s.in_flight,
        "{fetch}",
        "Token fetches in progress",
    ),
)


@final
class OpenTelemetryInstrumentation:
    """Metrics and spans of token fetches, cooldowns and evictions; an `Instrumentation`.

    One instance may serve several managers. Its methods are called by the manager on its
    event loop; the observable instruments are read by the SDK's reader (any thread).

    Args:
        meter_provider: Where the instruments are made; default: the global provider.
        tracer_provider: Where the spans go; default: the global provider.
        tenant_attribute: Add `tokenflight.tenant` to the event metrics and spans.
    """

    def __init__(
        self,
        *,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        tenant_attribute: bool = False,
    ) -> None:
        from . import __version__

        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._tenant_attribute = tenant_attribute
        self._spans: dict[int, Span] = {}  # by fetch id, until the fetch ends
        self._managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()
        self._requests = meter.create_counter(
            "tokenflight.token.requests", "{request}", "Token fetches ended, by outcome"
        )
        self._duration = meter.create_histogram(
            "tokenflight.token.fetch.duration",
            "s",
            "Duration of token fetches, retries included",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._refreshes = meter.create_counter(
            "tokenflight.refreshes", "{refresh}", "Background refreshes ended, by outcome"
        )
        self._cooldowns = meter.create_counter(
            "tokenflight.cooldowns", "{cooldown}", "Failed fetches remembered for a cooldown"
        )
        self._evictions = meter.create_counter(
            "tokenflight.evictions", "{eviction}", "Slots evicted, by reason"
        )
        for name, read, unit, description in _COUNTED:
            meter.create_observable_counter(name, [self._observe(read)], unit, description)
        for name, read, unit, description in _GAUGED:
            meter.create_observable_up_down_counter(name, [self._observe(read)], unit, description)

    def observe(self, manager: TokenManager) -> None:
        """Report this manager's `stats()` through the observable instruments.

        Held by a weak reference: a manager that is gone stops being reported.
        """
        self._managers.add(manager)

    # -- the Instrumentation protocol ----------------------------------------------------

    def fetch_started(self, event: FetchStarted) -> None:
        """Start the fetch's span, under the current span (the caller's) if any."""
        attributes: _Attributes = {
            "server.address": event.endpoint_host,
            "tokenflight.client_id": event.client_id,
            "tokenflight.background": event.background,
        }
        if self._tenant_attribute:
            attributes["tokenflight.tenant"] = event.key.tenant
        self._spans[event.fetch_id] = self._tracer.start_span(
            "tokenflight.fetch_token", kind=SpanKind.INTERNAL, attributes=attributes
        )

    def fetch_finished(self, event: FetchFinished) -> None:
        """Count the fetch, record its duration, end its span."""
        attributes: _Attributes = {
            "tokenflight.outcome": event.outcome,
            "tokenflight.background": event.background,
            "tokenflight.from_store": event.from_store,
            "server.address": event.endpoint_host,
        }
        if event.error_type is not None:
            attributes["error.type"] = event.error_type
        if event.error_code is not None:
            attributes["tokenflight.oauth.error"] = event.error_code
        if self._tenant_attribute:
            attributes["tokenflight.tenant"] = event.key.tenant
        self._requests.add(1, attributes)
        self._duration.record(event.duration, attributes)
        if event.background:
            self._refreshes.add(1, self._tenant({"tokenflight.outcome": event.outcome}, event))
        span = self._spans.pop(event.fetch_id, None)
        if span is None:
            return
        span.set_attributes(attributes)
        if event.attempts is not None:
            span.set_attribute("tokenflight.attempts", event.attempts)
            span.set_attribute("tokenflight.retry_wait", event.retry_wait or 0.0)
        if event.status_code is not None:
            span.set_attribute("http.response.status_code", event.status_code)
        if event.outcome != "success":
            span.set_status(Status(StatusCode.ERROR, event.error_type))
        span.end()

    def cooldown_entered(self, event: CooldownEntered) -> None:
        """Count the cooldown."""
        self._cooldowns.add(1, self._tenant({"error.type": event.error_type}, event))

    def slot_evicted(self, event: SlotEvicted) -> None:
        """Count the eviction."""
        self._evictions.add(1, self._tenant({"tokenflight.eviction.reason": event.reason}, event))

    # -- helpers -------------------------------------------------------------------------

    def _tenant(
        self, attributes: _Attributes, event: FetchFinished | CooldownEntered | SlotEvicted
    ) -> _Attributes:
        if self._tenant_attribute:
            attributes["tokenflight.tenant"] = event.key.tenant
        return attributes

    def _observe(self, read: Callable[[ManagerStatistics], int]) -> ObservableCallback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            total = 0
            for manager in list(self._managers):
                stats = _stats_of(manager)
                if stats is not None:
                    total += read(stats)
            return [Observation(total)]

        return callback


def _stats_of(manager: TokenManager) -> ManagerStatistics | None:
    """The manager's stats, read from the reader's thread: retried if its table changed."""
    for _ in range(3):
        try:
            return manager.stats()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return None
