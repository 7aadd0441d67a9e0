"""SyncTokenManager: the manager for synchronous and threaded code."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable

import httpx
import httpx2
import pytest

from tokenflight import (
    ConfigurationError,
    ManagerClosedError,
    RetryPolicy,
    SyncTokenManager,
    TokenEndpointUnavailable,
)
from tokenflight.testing import TEST_CLIENT_ID, Fault


@pytest.fixture(params=["asyncio", "trio"])
def backend(request) -> str:
    """The event loop behind the facade."""
    name: str = request.param
    return name


def test_remaining_and_wall_expiry_are_right_on_any_backend(tokenflight_credentials, backend):
    """A token's remaining() and expires_at_wall match the wall clock, trio's offset clock too."""
    import time

    with SyncTokenManager(backend=backend) as tokens:
        tokens.register("acme", tokenflight_credentials)
        before = time.time()
        token = tokens.get_token("acme")
        after = time.time()
    assert token.obtained_at_wall is not None
    assert before - 1 <= token.obtained_at_wall <= after + 1
    assert token.expires_at_wall == token.obtained_at_wall + token.expires_in
    left = token.remaining()
    assert token.expires_in - (time.time() - before) - 1 <= left <= token.expires_in + 1


def test_sixteen_threads_share_one_token_request(tokenflight_idp, tokenflight_credentials, backend):
    """16 threads asking for a cold key at once cause one token request and one token."""
    seen: list[str] = []
    barrier = threading.Barrier(16)
    with SyncTokenManager(backend=backend) as tokens:
        tokens.register("acme", tokenflight_credentials)

        def hammer() -> None:
            barrier.wait()
            seen.extend(tokens.get_token("acme").access_token for _ in range(50))

        threads = [threading.Thread(target=hammer) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tokens.stats().total.fetches == 1
    assert len(seen) == 800
    assert len(set(seen)) == 1
    assert tokenflight_idp.token_requests == 1


def run_threads(count: int, target: Callable[[], None]) -> None:
    """Start `count` threads on `target` behind one barrier, and join them all."""
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        target()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_failures_reach_every_thread_as_typed_errors(
    tokenflight_idp, tokenflight_credentials, backend
):
    """16 threads hammering a failing IdP: each call a TokenEndpointUnavailable without the
    secret, and one shared token request for all 320 calls (single flight, then cooldown)."""
    tokenflight_idp.inject(Fault(status=503), count=None)
    errors: list[Exception] = []
    others: list[BaseException] = []
    retry = RetryPolicy(attempts=1, cooldown=60)
    with SyncTokenManager(backend=backend, retry=retry) as tokens:
        tokens.register("acme", tokenflight_credentials)

        def hammer() -> None:
            for _ in range(20):
                try:
                    tokens.get_token("acme")
                except TokenEndpointUnavailable as exc:
                    errors.append(exc)
                except BaseException as exc:
                    others.append(exc)

        run_threads(16, hammer)
    assert others == []
    assert len(errors) == 320
    secret = tokenflight_idp.clients[TEST_CLIENT_ID].secret
    assert all(secret not in str(error) for error in errors)
    assert tokenflight_idp.token_requests == 1


def test_a_transient_fault_is_absorbed_for_sixteen_threads(
    tokenflight_idp, tokenflight_credentials, backend, no_retry_wait
):
    """A 503 then a token, 16 threads hammering: every call gets the one token, 2 requests."""
    tokenflight_idp.inject(Fault(status=503), count=1)
    seen: list[str] = []
    with SyncTokenManager(backend=backend, retry=RetryPolicy(attempts=2)) as tokens:
        tokens.register("acme", tokenflight_credentials)
        run_threads(
            16, lambda: seen.extend(tokens.get_token("acme").access_token for _ in range(20))
        )
    assert len(seen) == 320
    assert len(set(seen)) == 1
    assert tokenflight_idp.token_requests == 2


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_auth_works_with_sync_clients(tokenflight_idp, tokenflight_credentials, module, backend):
    """`auth()` authorizes an httpx.Client or httpx2.Client; a revoked token is replaced."""
    with SyncTokenManager(backend=backend) as tokens:
        tokens.register("acme", tokenflight_credentials)
        with module.Client(auth=tokens.auth("acme")) as http:
            assert http.get(tokenflight_idp.resource_url).status_code == 200
            first = tokens.get_token("acme")
            assert tokenflight_idp.revoke(first.access_token)
            assert http.get(tokenflight_idp.resource_url).status_code == 200
        assert tokens.get_token("acme").access_token != first.access_token
    assert tokenflight_idp.token_requests == 2


def test_start_and_close_without_a_with_block(tokenflight_credentials, backend):
    """start()/close() for frameworks without a lifespan; calls after close() are refused."""
    tokens = SyncTokenManager(backend=backend)
    tokens.start()
    try:
        tokens.register("acme", tokenflight_credentials)
        assert tokens.get_token("acme").access_token
        with pytest.raises(ConfigurationError, match="already started"):
            tokens.start()
    finally:
        tokens.close()
    with pytest.raises(ManagerClosedError):
        tokens.get_token("acme")
    assert "stopped" in repr(tokens)


def test_async_client_is_pointed_to_the_async_auth(tokenflight_idp):
    """A SyncTokenAuth on an AsyncClient says to use TokenManager.auth()."""
    with SyncTokenManager() as tokens:
        auth = tokens.auth("acme")
        flow = auth.async_auth_flow(httpx.Request("GET", tokenflight_idp.resource_url))
        with pytest.raises(RuntimeError, match=r"TokenManager\.auth"):
            flow.__anext__().send(None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_is_refused(tokenflight_credentials, backend):
    """After fork(), the parent's manager refuses to serve the child: ConfigurationError."""
    with SyncTokenManager(backend=backend) as tokens:
        tokens.register("acme", tokenflight_credentials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never return to pytest
            code = 1
            try:
                tokens.get_token("acme")
            except ConfigurationError:
                code = 0
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tokens.get_token("acme").access_token  # the parent goes on
