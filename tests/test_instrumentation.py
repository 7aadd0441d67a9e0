"""Instrumentation hooks: fetch started/finished, cooldowns, evictions; failing hooks."""

from __future__ import annotations

import logging
import traceback

import anyio
import httpx
import pytest

from helpers import Recorder, creds, gather_tokens, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ClientSecretPost,
    ConfigurationError,
    CooldownEntered,
    FetchFinished,
    FetchStarted,
    Instrumentation,
    RetryPolicy,
    SlotEvicted,
    TokenEndpointUnavailable,
    TokenError,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-hooks-never-shown"
FAST = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02, total_timeout=5.0, cooldown=0.2)


class Broken(Recorder):
    """Raises from every hook, after recording the event."""

    def fetch_started(self, event: FetchStarted) -> None:
        super().fetch_started(event)
        raise RuntimeError("broken hook")

    def fetch_finished(self, event: FetchFinished) -> None:
        super().fetch_finished(event)
        raise RuntimeError("broken hook")

    def cooldown_entered(self, event: CooldownEntered) -> None:
        super().cooldown_entered(event)
        raise RuntimeError("broken hook")

    def slot_evicted(self, event: SlotEvicted) -> None:
        super().slot_evicted(event)
        raise RuntimeError("broken hook")


async def test_one_fetch_reports_start_and_success():
    """100 concurrent callers of a cold key produce one started and one finished event."""
    recorder = Recorder()
    async with IdentityProvider() as idp, TokenManager(instrumentation=recorder) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await gather_tokens(tokens, ["acme"] * 100)
    [started] = recorder.of(FetchStarted)
    [finished] = recorder.of(FetchFinished)
    assert started.key.tenant == "acme"
    assert started.client_id == "acme"
    assert started.endpoint_host == "127.0.0.1"
    assert started.background is False
    assert finished.fetch_id == started.fetch_id
    assert finished.outcome == "success"
    assert finished.error_code is None
    assert finished.error_type is None
    assert finished.duration >= 0.0
    assert finished.from_store is False
    assert recorder.events.index(started) < recorder.events.index(finished)


async def test_unavailable_reports_outcome_and_cooldown(no_retry_wait):
    """503s until retries run out: outcome "unavailable" with status 503, then a cooldown."""
    recorder = Recorder()
    async with (
        IdentityProvider() as idp,
        TokenManager(retry=FAST, instrumentation=[recorder]) as tokens,
    ):
        idp.add_client("acme", SECRET)
        idp.inject(Fault(status=503), count=None)
        tokens.register("acme", creds(idp))
        with pytest.raises(TokenEndpointUnavailable):
            await tokens.get_token("acme")
    [finished] = recorder.of(FetchFinished)
    assert finished.outcome == "unavailable"
    assert finished.error_type == "TokenEndpointUnavailable"
    assert finished.status_code == 503
    [cooldown] = recorder.of(CooldownEntered)
    assert cooldown.error_type == "TokenEndpointUnavailable"
    assert cooldown.seconds > 0
    assert cooldown.failures == 1


async def test_refusal_reports_the_oauth_error_code():
    """A wrong secret: outcome "refused" with error code invalid_client, and a cooldown."""
    recorder = Recorder()
    async with IdentityProvider() as idp, TokenManager(instrumentation=recorder) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp, auth=ClientSecretBasic("wrong-secret-never-shown")))
        with pytest.raises(TokenRequestRefused):
            await tokens.get_token("acme")
    [finished] = recorder.of(FetchFinished)
    assert finished.outcome == "refused"
    assert finished.error_code == "invalid_client"
    assert finished.error_type == "TokenRequestRefused"
    assert [c.error_type for c in recorder.of(CooldownEntered)] == ["TokenRequestRefused"]
    assert "wrong-secret-never-shown" not in repr(recorder.events)


async def test_background_refresh_is_reported_as_background():
    """A refresh ahead of expiry is reported with background=True."""
    recorder = Recorder()
    async with (
        IdentityProvider(token_lifetime=1) as idp,
        TokenManager(instrumentation=recorder) as tokens,
    ):
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        await tokens.get_token("acme")  # used since it arrived: worth refreshing

        def refreshed() -> bool:
            return any(e.background for e in recorder.of(FetchFinished))

        await wait_until(refreshed)
    background = [e for e in recorder.of(FetchFinished) if e.background]
    assert background[0].outcome == "success"
    assert any(e.background for e in recorder.of(FetchStarted))


async def test_unregister_reports_eviction():
    """Unregistering a tenant reports its slots as evicted with reason "tenant_dropped"."""
    recorder = Recorder()
    async with IdentityProvider() as idp, TokenManager(instrumentation=recorder) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        tokens.unregister("acme")
    [evicted] = recorder.of(SlotEvicted)
    assert evicted.key.tenant == "acme"
    assert evicted.reason == "tenant_dropped"


async def test_a_raising_hook_is_logged_and_never_breaks_delivery(caplog, no_retry_wait):
    """Hooks that raise are logged; tokens, errors and the next hooks go on as before."""
    broken, recorder = Broken(), Recorder()
    caplog.set_level(logging.ERROR, logger="tokenflight")
    async with (
        IdentityProvider() as idp,
        TokenManager(retry=FAST, instrumentation=(broken, recorder)) as tokens,
    ):
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        token = await tokens.get_token("acme")
        assert token.access_token
        idp.inject(Fault(status=503), count=None)
        tokens.invalidate("acme")
        with pytest.raises(TokenEndpointUnavailable):
            await tokens.get_token("acme")
        tokens.unregister("acme")
    assert [type(e) for e in recorder.events] == [type(e) for e in broken.events]
    assert len(recorder.events) == 6  # 2 starts, 2 finishes, 1 cooldown, 1 eviction
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Broken.fetch_started raised" in m for m in messages) == 2
    assert any("Broken.slot_evicted raised" in m for m in messages)


async def test_events_never_carry_a_secret_or_token():
    """No event holds the client secret or an access token."""
    recorder = Recorder()
    async with IdentityProvider() as idp, TokenManager(instrumentation=recorder) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        token = await tokens.get_token("acme")
        tokens.unregister("acme")
    text = repr(recorder.events)
    assert recorder.events
    assert SECRET not in text
    assert token.access_token not in text


def test_instrumentation_is_checked():
    """An object without the four hook methods is refused with ConfigurationError."""
    assert isinstance(Recorder(), Instrumentation)
    with pytest.raises(ConfigurationError, match="fetch_started"):
        TokenManager(instrumentation=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TokenManager(instrumentation=[Recorder(), 42])  # type: ignore[list-item]


async def test_no_hook_is_called_on_a_cached_token():
    """Cached tokens are served without any hook call."""
    recorder = Recorder()
    async with IdentityProvider() as idp, TokenManager(instrumentation=recorder) as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        count = len(recorder.events)
        for _ in range(100):
            await tokens.get_token("acme")
        await anyio.lowlevel.checkpoint()
        assert len(recorder.events) == count


# -- logs ------------------------------------------------------------------------------


def fields(record: logging.LogRecord) -> dict[str, object]:
    names = ("tenant", "client_id", "endpoint_host", "status", "attempt")
    return {k: getattr(record, k, None) for k in names}


async def test_failure_warning_carries_structured_fields(caplog, no_retry_wait):
    """The failure warning has tenant, client_id, endpoint_host, status, attempt; no secret."""
    caplog.set_level(logging.WARNING, logger="tokenflight")
    async with IdentityProvider() as idp, TokenManager(retry=FAST) as tokens:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(status=503), count=None)
        tokens.register("acme", creds(idp))
        with pytest.raises(TokenEndpointUnavailable):
            await tokens.get_token("acme")
    [record] = [r for r in caplog.records if "failed, next try" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert fields(record) == {
        "tenant": "acme",
        "client_id": "acme",
        "endpoint_host": "127.0.0.1",
        "status": 503,
        "attempt": 2,  # FAST: two attempts, both 503
    }
    assert SECRET not in repr(vars(record))


async def test_each_attempt_is_logged_with_its_number(caplog, no_retry_wait):
    """Every token request attempt is a DEBUG record with endpoint_host and attempt fields."""
    caplog.set_level(logging.DEBUG, logger="tokenflight")
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(status=503), count=2)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
    sent = [r for r in caplog.records if r.getMessage().startswith("token request to")]
    assert [fields(r)["attempt"] for r in sent] == [1, 2, 3]
    assert {fields(r)["endpoint_host"] for r in sent} == {"127.0.0.1"}
    assert all(r.levelno == logging.DEBUG for r in sent)


async def test_an_unexpected_error_is_logged_with_its_traceback_and_no_secret(caplog):
    """A transport raising a non-HTTP error: logged with exc_info, no secret in any local."""

    class Exploding(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise RuntimeError("transport bug")

    caplog.set_level(logging.ERROR, logger="tokenflight")
    async with (
        httpx.AsyncClient(transport=Exploding()) as http,
        TokenManager(http_client=http) as tokens,
    ):
        for tenant, auth in (("basic", ClientSecretBasic), ("post", ClientSecretPost)):
            tokens.register(
                tenant,
                ClientCredentials(
                    token_url="http://127.0.0.1:9/oauth/token",
                    client_id="acme",
                    auth=auth(SECRET),
                ),
            )
            with pytest.raises(TokenError, match="unexpected RuntimeError"):
                await tokens.get_token(tenant)
    unexpected = [r for r in caplog.records if "unexpected RuntimeError" in r.getMessage()]
    assert len(unexpected) == 2
    for record in unexpected:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        exc = record.exc_info[1]
        assert isinstance(exc, RuntimeError)
        assert exc.__traceback__ is not None  # the traceback is kept, not cleared
        text = "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
        assert "transport bug" in text
        assert "_attempt" in text  # tokenflight's own frames, with their locals
        assert SECRET not in text
        assert SECRET not in record.getMessage()
        assert SECRET not in logging.Formatter().format(record)


async def test_refreshes_and_evictions_are_logged_at_debug(caplog):
    """A background refresh and an eviction each log one DEBUG record with the fields."""
    caplog.set_level(logging.DEBUG, logger="tokenflight")
    async with IdentityProvider(token_lifetime=1) as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        await tokens.get_token("acme")  # used since it arrived: worth refreshing
        await wait_until(lambda: tokens.stats().total.refreshes >= 1)
        tokens.unregister("acme")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    refreshed = [r for r in debug if "refreshed the token" in r.getMessage()]
    evicted = [r for r in debug if "evicted a slot" in r.getMessage()]
    assert refreshed
    assert len(evicted) == 1
    assert "tenant_dropped" in evicted[0].getMessage()
    for record in (refreshed[0], evicted[0]):
        assert fields(record)["tenant"] == "acme"
        assert fields(record)["endpoint_host"] == "127.0.0.1"
        assert SECRET not in repr(vars(record))


# -- health view -----------------------------------------------------------------------


async def test_stats_show_each_keys_health():
    """stats() per key: expires_in, refresh_at and latency after a fetch; no error."""
    async with IdentityProvider(token_lifetime=3600) as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        [health] = tokens.stats().keys.values()
        now = anyio.current_time()
    assert health.expires_in is not None
    assert 3500 < health.expires_in <= 3600
    assert health.refresh_at is not None
    assert health.refresh_at > now
    assert health.last_fetch_latency is not None
    assert health.last_fetch_latency >= 0
    assert health.fetch_latency_p50 == health.last_fetch_latency  # one fetch: its median
    assert health.last_error is None
    assert health.cooldown_until is None
    assert tokens.stats().total.expires_in is None  # the health view is per key


async def test_stats_show_a_failing_keys_error_and_cooldown():
    """stats() per key after a refusal: last_error (no secret) and cooldown_until."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp, auth=ClientSecretBasic("wrong-secret-never-shown")))
        with pytest.raises(TokenRequestRefused):
            await tokens.get_token("acme")
        [health] = tokens.stats().keys.values()
        now = anyio.current_time()
    assert health.last_error is not None
    assert health.last_error.startswith("TokenRequestRefused: ")
    assert "invalid_client" in health.last_error
    assert "wrong-secret-never-shown" not in health.last_error
    assert health.cooldown_until is not None
    assert health.cooldown_until > now
    assert health.expires_in is None


async def test_single_flight_joins_are_counted(tokens):
    """50 concurrent callers of a cold key: one fetch, 49 joins, in stats()."""
    import anyio

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(tokens.get_token, "acme")
    total = tokens.stats().total
    assert (total.fetches, total.joins, total.misses) == (1, 49, 50)
    assert tokens.stats().admission_waiting == 0


async def test_attempts_and_retry_waits_are_reported(no_retry_wait):
    """Two 503s then a token: the finished event says 3 attempts and the time waited."""
    recorder = Recorder()
    async with (
        IdentityProvider() as idp,
        TokenManager(instrumentation=[recorder]) as tokens,
    ):
        idp.add_client("acme", SECRET)
        idp.inject(Fault(status=503), count=2)
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
    [finished] = recorder.of(FetchFinished)
    assert finished.outcome == "success"
    assert finished.attempts == 3
    assert finished.retry_wait == 0.0  # set_testing: retries do not wait
