"""The cached-token path: no suspension, no hook, no memory kept, instrumented or not."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Coroutine
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from helpers import Recorder
from tokenflight import ClientCredentials, ClientSecretBasic, Token, TokenManager
from tokenflight.otel import OpenTelemetryInstrumentation
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio


def completed(coro: Coroutine[Any, Any, Token]) -> Token:
    """The coroutine's result, run to its end in one step: it must not suspend (no lock,
    no I/O, no checkpoint)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        token: Token = stop.value
        return token
    coro.close()
    raise AssertionError("a cached get_token suspended")


OURS = [tracemalloc.Filter(True, "*tokenflight*")]


def traced_peak(tokens: TokenManager, calls: int) -> tuple[int, int]:
    """Bytes allocated at the peak of `calls` cached get_token calls over what was held
    before them, and bytes our code still holds after them over the same.

    Another thread (the test session's own) may allocate meanwhile: the peak is the least
    of three runs, and what is held is counted on tokenflight's own lines only.
    """
    completed(tokens.get_token("acme"))  # the hit counter's value, now a traced object
    peaks, kept = [], []
    for _ in range(3):
        start = tracemalloc.take_snapshot().filter_traces(OURS)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for _ in itertools.repeat(None, calls):  # no loop counter: it is an int object
            completed(tokens.get_token("acme"))
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
        end = tracemalloc.take_snapshot().filter_traces(OURS)
        kept.append(sum(stat.size_diff for stat in end.compare_to(start, "lineno")))
    return min(peaks), min(kept)


async def test_a_cached_get_token_with_instrumentation_allocates_nothing(
    idp: IdentityProvider,
) -> None:
    """With OpenTelemetry and a hook, a cached get_token completes without suspending,
    calls no hook, keeps no memory, and its transient allocations are those of a manager
    without instrumentation, as many over 20,000 calls as over 20 (none per call)."""
    creds = ClientCredentials(
        token_url=idp.token_url,
        client_id="acme",
        auth=ClientSecretBasic(idp.clients["acme"].secret),
    )
    recorder = Recorder()
    otel = OpenTelemetryInstrumentation(
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        tracer_provider=TracerProvider(),
    )
    async with (
        TokenManager(instrumentation=[otel, recorder]) as instrumented,
        TokenManager() as plain,
    ):
        otel.observe(instrumented)
        peaks = []
        for tokens in (instrumented, plain):
            tokens.register("acme", creds)
            await tokens.get_token("acme")
            for _ in range(1000):  # warm: specialized bytecode, interned objects
                completed(tokens.get_token("acme"))
            events = len(recorder.events)
            tracemalloc.start()
            try:
                few, kept_few = traced_peak(tokens, 20)
                many, kept_many = traced_peak(tokens, 20_000)
            finally:
                tracemalloc.stop()
            assert len(recorder.events) == events  # no hook on the cached path
            assert kept_few <= 0
            assert kept_many <= 0
            assert many == few  # nothing accumulates from one call to the next
            peaks.append(many)
        assert peaks[0] == peaks[1]  # instrumentation allocates nothing of its own
        assert instrumented.stats().total.hits == plain.stats().total.hits == 1_000 + 2 + 3 * 20_020


async def test_get_token_rejects_an_unknown_keyword(tokens: TokenManager) -> None:
    """get_token's keywords are checked: a misspelt one is a TypeError, as a function's."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'audiance'"):
        await tokens.get_token("acme", audiance="api")  # type: ignore[call-arg]
    assert (await tokens.get_token("acme", audience=None, min_ttl=0.0)).access_token
