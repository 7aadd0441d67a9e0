"""tokenflight.otel: metrics and spans through the OpenTelemetry SDK's in-memory readers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from helpers import gather_tokens, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    MalformedTokenResponse,
    RefreshPolicy,
    RetryPolicy,
    TokenEndpointUnavailable,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight.otel import OpenTelemetryInstrumentation
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-otel-never-shown"
FAST = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02, total_timeout=5.0, cooldown=0.2)


@dataclass
class Telemetry:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    tracers: TracerProvider
    instrumentation: OpenTelemetryInstrumentation

    def points(self, name: str) -> list[Any]:
        """The data points of one instrument (empty when it recorded nothing)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def value(self, name: str, **attributes: object) -> float:
        """The sum of a counter's points whose attributes include `attributes`."""
        return float(
            sum(
                p.value
                for p in self.points(name)
                if attributes.items() <= dict(p.attributes or {}).items()
            )
        )

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(s for s in self.exporter.get_finished_spans() if s.name.startswith("tokenf"))

    def attribute_values(self) -> Iterator[str]:
        """Every attribute key and value of every exported point and span, as text."""
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        for key, value in (point.attributes or {}).items():
                            yield key + "=" + str(value)
        for span in self.exporter.get_finished_spans():
            for key, value in (span.attributes or {}).items():
                yield key + "=" + str(value)
            yield span.status.description or ""


def make_telemetry(**kwargs: Any) -> Telemetry:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    otel = OpenTelemetryInstrumentation(meter_provider=meters, tracer_provider=tracers, **kwargs)
    return Telemetry(reader, exporter, tracers, otel)


@asynccontextmanager
async def running(
    telemetry: Telemetry,
    *,
    secret: str = SECRET,
    retry: RetryPolicy = FAST,
    refresh: RefreshPolicy | None = None,
    lifetime: float | None = None,
) -> AsyncIterator[tuple[IdentityProvider, TokenManager]]:
    options: dict[str, Any] = {} if refresh is None else {"refresh": refresh}
    async with (
        IdentityProvider(token_lifetime=lifetime) as idp,
        TokenManager(retry=retry, instrumentation=telemetry.instrumentation, **options) as tokens,
    ):
        idp.add_client("acme", SECRET)
        idp.add_client("globex", SECRET)
        for tenant in ("acme", "globex"):
            creds = ClientCredentials(
                token_url=idp.token_url, client_id=tenant, auth=ClientSecretBasic(secret)
            )
            tokens.register(tenant, creds)
        telemetry.instrumentation.observe(tokens)
        yield idp, tokens


async def test_a_fetch_is_counted_timed_and_traced():
    """A cold key's fetch: one request "success", one duration, one span; cache counters."""
    telemetry = make_telemetry()
    async with running(telemetry) as (_, tokens):
        await gather_tokens(tokens, ["acme"] * 20)
        await tokens.get_token("acme")
        assert telemetry.value("tokenflight.token.requests", **{"tokenflight.outcome": "success"})
        assert telemetry.value("tokenflight.cache.hits") >= 1
        assert (
            telemetry.value("tokenflight.cache.hits") + telemetry.value("tokenflight.cache.misses")
            == 21
        )
        assert telemetry.value("tokenflight.slots") == 1
        assert telemetry.value("tokenflight.token.fetch.active") == 0
        # 20 callers at once on a cold key: one fetch, 19 joined it.
        assert telemetry.value("tokenflight.single_flight.joins") == 19
        assert telemetry.points("tokenflight.stale_served")  # reported, at 0
        assert telemetry.value("tokenflight.stale_served") == 0
        assert telemetry.points("tokenflight.admission.waiting")
    assert telemetry.value("tokenflight.token.requests") == 1
    [duration] = telemetry.points("tokenflight.token.fetch.duration")
    assert duration.count == 1
    assert duration.sum >= 0
    [span] = telemetry.spans()
    assert span.name == "tokenflight.fetch_token"
    attributes = dict(span.attributes or {})
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["tokenflight.client_id"] == "acme"
    assert attributes["tokenflight.outcome"] == "success"
    assert attributes["tokenflight.background"] is False
    assert span.status.status_code is StatusCode.UNSET
    assert "tokenflight.tenant" not in attributes  # only when asked for


async def test_503s_are_unavailable_with_an_error_span_and_a_cooldown(no_retry_wait):
    """503s until retries run out: outcome "unavailable", a cooldown, an ERROR span with 503."""
    telemetry = make_telemetry()
    async with running(telemetry) as (idp, tokens):
        idp.inject(Fault(status=503), count=None)
        with pytest.raises(TokenEndpointUnavailable):
            await tokens.get_token("acme")
    outcome = {"tokenflight.outcome": "unavailable", "error.type": "TokenEndpointUnavailable"}
    assert telemetry.value("tokenflight.token.requests", **outcome) == 1
    assert telemetry.value("tokenflight.cooldowns", **{"error.type": "TokenEndpointUnavailable"})
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 503
    attempts = attributes["tokenflight.attempts"]
    assert isinstance(attempts, int)
    assert attempts >= 2  # the retries are on the span
    assert attributes["tokenflight.retry_wait"] == 0.0


async def test_a_wrong_secret_is_refused_with_invalid_client():
    """A wrong secret: outcome "refused" with tokenflight.oauth.error invalid_client."""
    telemetry = make_telemetry()
    async with running(telemetry, secret="wrong-otel-secret-never-shown") as (_, tokens):
        with pytest.raises(TokenRequestRefused):
            await tokens.get_token("acme")
    refused = {"tokenflight.outcome": "refused", "tokenflight.oauth.error": "invalid_client"}
    assert telemetry.value("tokenflight.token.requests", **refused) == 1
    [span] = telemetry.spans()
    assert dict(span.attributes or {})["tokenflight.oauth.error"] == "invalid_client"
    assert all("wrong-otel-secret" not in text for text in telemetry.attribute_values())


async def test_a_malformed_response_is_counted_as_malformed():
    """A 200 whose body is not a token: outcome "malformed", a cooldown, an ERROR span."""
    telemetry = make_telemetry()
    async with running(telemetry) as (idp, tokens):
        idp.inject(Fault(status=200, body=b"<html>not a token</html>"))
        with pytest.raises(MalformedTokenResponse):
            await tokens.get_token("acme")
    malformed = {"tokenflight.outcome": "malformed", "error.type": "MalformedTokenResponse"}
    assert telemetry.value("tokenflight.token.requests", **malformed) == 1
    assert telemetry.value("tokenflight.token.requests") == 1
    assert telemetry.value("tokenflight.cooldowns", **{"error.type": "MalformedTokenResponse"})
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["tokenflight.outcome"] == "malformed"


async def test_a_background_refresh_is_counted_and_traced():
    """A refresh ahead of expiry: tokenflight.refreshes "success", a background span."""
    telemetry = make_telemetry()
    early = RefreshPolicy(fraction=0.1, jitter=0.0, leeway=0.0)  # at 1 s of a 10 s token
    async with running(telemetry, refresh=early, lifetime=10) as (_, tokens):
        await tokens.get_token("acme")
        await tokens.get_token("acme")  # used since it arrived: worth refreshing
        await wait_until(lambda: telemetry.value("tokenflight.refreshes") >= 1)
        assert telemetry.value("tokenflight.refreshes", **{"tokenflight.outcome": "success"}) >= 1
    background = {"tokenflight.background": True, "tokenflight.outcome": "success"}
    assert telemetry.value("tokenflight.token.requests", **background) >= 1
    spans = [dict(s.attributes or {}) for s in telemetry.spans()]
    assert spans[0]["tokenflight.background"] is False  # the caller's fetch
    assert any(s["tokenflight.background"] is True for s in spans[1:])


async def test_a_failed_refresh_serves_stale_and_is_reported(no_retry_wait):
    """The IdP down at refresh time: the valid token stays in use, stale_served > 0."""
    telemetry = make_telemetry()
    early = RefreshPolicy(fraction=0.05, jitter=0.0, leeway=0.0)  # at 1.5 s of a 30 s token
    async with running(telemetry, refresh=early, lifetime=30) as (idp, tokens):
        first = await tokens.get_token("acme")
        idp.inject(Fault(status=503), count=None)
        assert (await tokens.get_token("acme")) == first  # used: worth refreshing
        await wait_until(lambda: telemetry.value("tokenflight.stale_served") >= 1)
        assert (await tokens.get_token("acme")).access_token == first.access_token
        failed = {"tokenflight.outcome": "unavailable"}
        assert telemetry.value("tokenflight.refreshes", **failed) >= 1
        assert telemetry.value("tokenflight.refreshes", **{"tokenflight.outcome": "success"}) == 0
        assert telemetry.value("tokenflight.cooldowns") >= 1


async def test_a_429_rate_limit_cools_the_whole_provider_down():
    """A 429 with Retry-After: "unavailable" with status 429, a cooldown, and another
    tenant on the same provider fails at once without a token request."""
    telemetry = make_telemetry()
    async with running(telemetry) as (idp, tokens):
        idp.inject(Fault(status=429, headers={"Retry-After": "60"}))
        with pytest.raises(TokenEndpointUnavailable) as limited:
            await tokens.get_token("acme")
        assert limited.value.status_code == 429
        with pytest.raises(TokenEndpointUnavailable, match="rate limited"):
            await tokens.get_token("globex")  # same provider: no request sent
        assert idp.token_requests == 1
    unavailable = {"tokenflight.outcome": "unavailable", "error.type": "TokenEndpointUnavailable"}
    assert telemetry.value("tokenflight.token.requests", **unavailable) == 2
    assert (
        telemetry.value("tokenflight.cooldowns", **{"error.type": unavailable["error.type"]}) == 2
    )
    first, second = (dict(s.attributes or {}) for s in telemetry.spans())
    assert first["http.response.status_code"] == 429
    assert first["tokenflight.attempts"] == 1  # Retry-After outlasts the retry budget
    assert "tokenflight.attempts" not in second  # no request was sent


async def test_the_fetch_span_is_a_child_of_the_callers_span():
    """A fetch started under the caller's span is traced as its child, in the same trace."""
    telemetry = make_telemetry()
    tracer = telemetry.tracers.get_tracer("test")
    async with running(telemetry) as (_, tokens):
        with tracer.start_as_current_span("handler") as parent:
            await tokens.get_token("acme")
    [span] = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == parent.get_span_context().trace_id


async def test_no_secret_or_token_in_any_attribute_and_tenant_only_when_asked():
    """With tenant_attribute, points and spans carry the tenant, never a secret or token."""
    telemetry = make_telemetry(tenant_attribute=True)
    async with running(telemetry) as (_, tokens):
        token = await tokens.get_token("acme")
        tokens.unregister("acme")
    texts = list(telemetry.attribute_values())
    assert "tokenflight.tenant=acme" in texts
    assert all(SECRET not in text and token.access_token not in text for text in texts)
    evicted = {"tokenflight.eviction.reason": "tenant_dropped", "tokenflight.tenant": "acme"}
    assert telemetry.value("tokenflight.evictions", **evicted) == 1


async def test_a_collected_manager_is_no_longer_observed():
    """observe() holds managers weakly: after one is gone, observations fall back to 0."""
    telemetry = make_telemetry()
    async with running(telemetry) as (_, tokens):
        await tokens.get_token("acme")
    assert telemetry.value("tokenflight.slots") == 0  # closed: its slots are gone
    assert telemetry.value("tokenflight.cache.misses") == 1
    del tokens
    gc.collect()
    assert telemetry.value("tokenflight.cache.misses") == 0
