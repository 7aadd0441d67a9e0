"""Cancellation, the clock, leeway and shutdown."""

from __future__ import annotations

import gc
import json
import time

import anyio
import httpx
import pytest
import trio.testing

from helpers import creds, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ManagerClosedError,
    RefreshPolicy,
    RetryPolicy,
    Token,
    TokenManager,
)
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-cancel"
RETRY = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02, total_timeout=5)


async def test_cancelled_starter_does_not_break_other_waiters():
    """The caller whose call started a fetch is cancelled; the other waiters still get a token."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(delay=0.5))
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", creds(idp))
            got: list[Token] = []
            starter_cancelled = False

            async def starter() -> None:
                nonlocal starter_cancelled
                with anyio.move_on_after(0.1) as scope:
                    await tm.get_token("acme")
                starter_cancelled = scope.cancelled_caught

            async def waiter() -> None:
                got.append(await tm.get_token("acme"))

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(starter)
                    await wait_until(lambda: idp.token_requests == 1)
                    for _ in range(10):
                        tg.start_soon(waiter)
            assert starter_cancelled
            assert len(got) == 10
            assert len({t.access_token for t in got}) == 1
            assert idp.token_requests == 1
            # The slot is healthy: the next call is served from cache.
            assert (await tm.get_token("acme")).access_token == got[0].access_token
            assert idp.token_requests == 1


async def test_all_waiters_cancelled_then_next_caller_is_clean():
    """Every waiter cancelled mid-fetch: the next caller starts cleanly and gets a token."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(delay=0.3))
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", creds(idp))
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(tm.get_token, "acme")
                await wait_until(lambda: idp.token_requests == 1)
                tg.cancel_scope.cancel()
            with anyio.fail_after(5):
                token = await tm.get_token("acme")
            assert token.expires_at > anyio.current_time()
            assert idp.token_requests <= 2
            assert tm.stats().in_flight == 0


async def test_expiry_counts_from_before_the_request():
    """obtained_at is read before the request is sent (before the IdP saw it), not on arrival."""
    async with IdentityProvider(token_lifetime=5) as idp:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(delay=1.0))
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", creds(idp))
            called = anyio.current_time()
            token = await tm.get_token("acme")
            returned = anyio.current_time()
            (record,) = idp.requests
            assert called <= token.obtained_at <= record.time
            assert token.obtained_at <= returned - 1.0
            assert token.expires_in == 5
            assert token.expires_at == token.obtained_at + token.expires_in


def test_leeway_scales_with_lifetime():
    """RefreshPolicy.leeway_for: the full leeway for long tokens, a tenth of short ones."""
    policy = RefreshPolicy(leeway=10)
    assert policy.leeway_for(3600) == 10
    assert policy.leeway_for(50) == 5
    assert policy.leeway_for(1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_token_is_treated_as_expired_a_leeway_early():
    """A 1 s token is replaced 0.1 s (its scaled leeway) before it really expires (on
    trio's MockClock, with the token endpoint in memory: no real time involved)."""
    issued: list[str] = []

    async def endpoint(request: httpx.Request) -> httpx.Response:
        issued.append(f"tok-{len(issued)}")
        body = {"access_token": issued[-1], "token_type": "Bearer", "expires_in": 1}
        return httpx.Response(200, content=json.dumps(body).encode())

    refresh = RefreshPolicy(fraction=0.5, jitter=0, leeway=10)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http,
        TokenManager(http_client=http, retry=RETRY, refresh=refresh) as tm,
    ):
        tm.register(
            "acme",
            ClientCredentials(
                token_url="https://idp.example/token",
                client_id="acme",
                auth=ClientSecretBasic(SECRET),
            ),
        )
        first = await tm.get_token("acme")  # not used again: no background refresh
        leeway = refresh.leeway_for(first.expires_in)
        await anyio.sleep(first.expires_at - leeway * 0.5 - anyio.current_time())
        assert first.expires_at - leeway < anyio.current_time() < first.expires_at
        second = await tm.get_token("acme")
        assert second.access_token != first.access_token
        assert issued == ["tok-0", "tok-1"]


async def test_closing_ends_fetches_and_refreshes_in_flight():
    """Closing mid-fetch and mid-refresh: waiters get ManagerClosedError, nothing leaks."""
    refresh = RefreshPolicy(fraction=0.2, jitter=0, leeway=0.1)
    outcome: list[BaseException] = []
    async with IdentityProvider(token_lifetime=2) as idp:
        idp.add_client("acme", SECRET)
        async with anyio.create_task_group() as tg:
            async with TokenManager(retry=RETRY, refresh=refresh) as tm:
                tm.register("warm", creds(idp))
                tm.register("cold", creds(idp))
                await tm.get_token("warm")
                await tm.get_token("warm")  # used: refreshed in the background at 0.4 s
                idp.inject(Fault(delay=30), count=None)

                async def cold_caller() -> None:
                    try:
                        await tm.get_token("cold")
                    except ManagerClosedError as exc:
                        outcome.append(exc)

                tg.start_soon(cold_caller)
                await wait_until(lambda: idp.token_requests == 3)  # cold fetch + warm refresh
                assert tm.stats().in_flight == 2
            assert tm.stats().in_flight == 0
            with anyio.fail_after(2):
                while not outcome:
                    await anyio.sleep(0.005)
        assert isinstance(outcome[0], ManagerClosedError)
        with pytest.raises(ManagerClosedError):
            await tm.get_token("warm")
    gc.collect()  # an unclosed socket or generator would now warn, and -W error fails the test


async def test_fast_path_never_returns_an_expired_token():
    """A loop blocked past a token's expiry: the next call does not get the expired token."""
    async with IdentityProvider(token_lifetime=1) as idp:
        idp.add_client("acme", SECRET)
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", creds(idp))
            first = await tm.get_token("acme")
            time.sleep(max(0.0, first.expires_at - anyio.current_time()) + 0.05)  # a busy loop
            token = await tm.get_token("acme")
            assert token.expires_at > anyio.current_time()


async def test_request_cancelled_mid_body_leaves_nothing_for_the_collector(http_module):
    """A token request cancelled while its body is being written leaves no suspended
    generator behind: under trio, httpx's own body would warn when collected (a
    ResourceWarning, an error here), as the soak once found."""
    from tokenflight._read import open_stream

    got_headers = anyio.Event()

    async def stalled(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()  # the headers, then never another byte
            got_headers.set()
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    body = b"x" * 20_000_000  # more than loopback's socket buffers: the write must wait
    async with listener, anyio.create_task_group() as tg, http_module.AsyncClient() as client:
        tg.start_soon(listener.serve, stalled)
        with anyio.CancelScope() as scope:

            async def cancel_once_stalled() -> None:
                await got_headers.wait()
                scope.cancel()

            tg.start_soon(cancel_once_stalled)
            async with open_stream(client, "POST", f"http://127.0.0.1:{port}/", content=body):
                pytest.fail("the server never answers")
        assert scope.cancelled_caught
        tg.cancel_scope.cancel()
    gc.collect()  # a suspended generator would be finalized, and warn, here
