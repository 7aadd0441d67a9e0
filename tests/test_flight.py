"""Single flight for resolution and discovery: budgets, typed failures, shared and remembered."""

from __future__ import annotations

import asyncio
import sys

import anyio
import pytest

from helpers import creds
from hostile.test_bodies import raw_response, raw_server
from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ConfigurationError,
    MalformedTokenResponse,
    ManagerClosedError,
    RetryPolicy,
    TenantResolutionError,
    TokenManager,
)

pytestmark = pytest.mark.anyio

SECRET = "flight-secret"


async def test_hanging_resolver_fails_its_tenant_within_the_budget(idp):
    """A resolver that never answers fails its tenant after the budget; others are served."""
    calls: list[str] = []
    hanging = anyio.Event()

    async def resolver(tenant: str) -> ClientCredentials | None:
        calls.append(tenant)
        if tenant == "stuck":
            hanging.set()
            await anyio.sleep_forever()
        return creds(idp)

    retry = RetryPolicy(total_timeout=0.2, cooldown=60.0)
    async with TokenManager(resolver=resolver, retry=retry) as tokens:
        errors: list[BaseException] = []

        async def stuck() -> None:
            with pytest.raises(TenantResolutionError) as caught:
                await tokens.get_token("stuck")
            errors.append(caught.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck)
            await hanging.wait()
            assert (await tokens.get_token("healthy")).access_token  # not held up
        assert "budget" in str(errors[0])
        with pytest.raises(TenantResolutionError):  # remembered: the resolver is not asked
            await tokens.get_token("stuck")
    assert calls.count("stuck") == 1


async def test_resolver_raising_cancelled_error_is_a_typed_failure(idp):
    """A resolver raising CancelledError fails its tenant; the manager and its block go on."""

    async def resolver(tenant: str) -> ClientCredentials | None:
        if tenant == "odd":
            raise asyncio.CancelledError
        return creds(idp)

    finished = False
    async with TokenManager(resolver=resolver) as tokens:
        with pytest.raises(TenantResolutionError) as caught:
            await tokens.get_token("odd")
        assert isinstance(caught.value.__cause__, asyncio.CancelledError)
        assert (await tokens.get_token("fine")).access_token
        finished = True
    assert finished


async def test_shutdown_during_resolution_is_manager_closed(idp):
    """Callers waiting on a resolution when the manager closes get ManagerClosedError."""
    resolved = anyio.Event()
    outcomes: list[BaseException] = []

    async def resolver(tenant: str) -> ClientCredentials | None:
        resolved.set()
        return creds(idp)

    async def caller(tokens: TokenManager) -> None:
        try:
            await tokens.get_token("late")
        except ManagerClosedError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg, TokenManager(resolver=resolver) as tokens:
        for _ in range(5):
            tg.start_soon(caller, tokens)
        await resolved.wait()  # leave as the resolution finishes
    assert len(outcomes) == 5


async def test_another_event_loop_is_refused(idp):
    """A manager called from another thread's event loop raises ConfigurationError."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))

        def elsewhere() -> None:
            asyncio.run(tokens.get_token("acme"))

        with pytest.raises(ConfigurationError, match="another event loop"):
            await anyio.to_thread.run_sync(elsewhere)
        assert (await tokens.get_token("acme")).access_token  # unharmed on its own loop


async def test_system_exit_leaves_with_its_code():
    """sys.exit(3) inside `async with TokenManager()` raises SystemExit(3), not a group."""
    with pytest.raises(SystemExit) as caught:
        async with TokenManager():
            sys.exit(3)
    assert caught.value.code == 3


async def test_keyboard_interrupt_leaves_unwrapped(idp):
    """Ctrl-C inside `async with TokenManager()` (a refresh scheduled) is the same object."""
    interrupt = KeyboardInterrupt()
    secret = ClientSecret(idp.clients["acme"].secret)

    async def interrupted() -> None:
        async with TokenManager() as tokens:
            tokens.register("acme", creds(idp, auth=secret))
            await tokens.get_token("acme")  # its refresh now waits in the task group
            raise interrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        await interrupted()
    assert caught.value is interrupt


async def test_discovery_failure_is_one_request_shared_and_remembered(idp):
    """50 tenants on an issuer with a bad document cause one discovery request in all."""
    idp.metadata_overrides["issuer"] = "https://someone-else.example"
    discovered = ClientCredentials(
        issuer=idp.url,
        client_id="acme",
        auth=ClientSecret(idp.clients["acme"].secret),
        allow_insecure_http=True,
    )
    async with TokenManager() as tokens:
        for n in range(50):
            tokens.register(f"t{n}", discovered)
        failures: list[BaseException] = []

        async def one(tenant: str) -> None:
            with pytest.raises(ConfigurationError) as caught:
                await tokens.get_token(tenant)
            failures.append(caught.value)

        for _ in range(2):  # a second round within the cooldown asks nobody
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(one, f"t{n}")
    assert len(failures) == 100
    assert idp.metadata_requests == 1
    assert idp.token_requests == 0


async def test_discovery_with_a_broken_gzip_body_is_malformed():
    """A discovery document with a broken gzip body is MalformedTokenResponse, asked once."""
    answer = raw_response(b"\x1f\x8b\x08\x00not gzip at all", headers={"Content-Encoding": "gzip"})
    async with raw_server(answer) as (url, received), TokenManager() as tokens:
        creds = ClientCredentials(
            issuer=url, client_id="acme", auth=ClientSecret(SECRET), allow_insecure_http=True
        )
        for n in range(20):
            tokens.register(f"t{n}", creds)

        async def one(tenant: str) -> None:
            with pytest.raises(MalformedTokenResponse):
                await tokens.get_token(tenant)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(one, f"t{n}")
        assert len(received) == 1
