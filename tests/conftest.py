from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import httpx2
import pytest

from tokenflight import TokenManager
from tokenflight.testing import IdentityProvider, running_idp
from tokenflight.testing._fixtures import credentials_for

collect_ignore = ["user_project"]  # run by test_plugin_compat, with each plugin

# Every async test runs on each event loop and each HTTP stack (the manager's own token
# requests, and the clients tests make through `http_module`); on asyncio also with the
# manager's token requests on aiohttp's transport.
COMBINATIONS = [
    ("asyncio", "httpx2"),
    ("asyncio", "httpx"),
    ("asyncio", "aiohttp"),
    ("trio", "httpx2"),
    ("trio", "httpx"),
]


@pytest.fixture(params=[pytest.param(c, id="-".join(c)) for c in COMBINATIONS])
def anyio_backend(request, monkeypatch):
    backend, stack = request.param
    monkeypatch.setenv("TOKENFLIGHT_HTTP", stack)
    return backend


@pytest.fixture
def http_module(anyio_backend) -> ModuleType:
    """The HTTP library of this test's stack: `httpx` or `httpx2` (the same API)."""
    import os

    return httpx if os.environ["TOKENFLIGHT_HTTP"] == "httpx" else httpx2


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    """The bundled IdP with client "acme" (a module may override it, keeping "acme").

    The shipped `running_idp`, on the test's own event loop (asyncio or trio, its clock):
    the shipped ``tokenflight_idp`` fixture serves from a loop thread of its own.
    """
    async with running_idp(client_id="acme", secret="acme-secret-never-shown") as server:
        yield server


@pytest.fixture
async def tokens(idp) -> AsyncIterator[TokenManager]:
    """A running manager with tenant "acme" registered at `idp`, with the IdP's secret."""
    async with TokenManager() as manager:
        manager.register("acme", credentials_for(idp, "acme"))
        yield manager


@pytest.fixture
def no_retry_wait():
    """Retries without waits (tokenflight.testing.set_testing), undone after the test."""
    from tokenflight.testing import set_testing

    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)
