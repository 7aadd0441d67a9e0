"""Both HTTP stacks, and aiohttp's transport: who sends the token requests, and on what."""

from __future__ import annotations

import httpx
import httpx2
import pytest

from helpers import creds
from tokenflight import (
    ConfigurationError,
    TokenAuth,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "stack-secret-never-shown"


async def test_token_requests_run_on_the_selected_stack(monkeypatch, http_module):
    """`http="auto"` follows $TOKENFLIGHT_HTTP; without it, httpx2 (alone or over aiohttp)."""
    expected = http_module.__name__
    async with IdentityProvider() as idp:
        idp.add_client("acme", SECRET)
        async with TokenManager() as tokens:
            tokens.register("acme", creds(idp))
            await tokens.get_token("acme")
        monkeypatch.delenv("TOKENFLIGHT_HTTP")
        async with TokenManager() as tokens:
            tokens.register("acme", creds(idp))
            await tokens.get_token("acme")
    agents = [record.user_agent or "" for record in idp.requests]
    assert agents[0].startswith(f"python-{expected}/")
    assert agents[1].startswith("python-httpx2/")


async def test_auth_is_an_auth_of_both_stacks(http_module):
    """One `TokenAuth` is accepted as `auth=` by httpx and by httpx2 clients."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        auth = tokens.auth("acme")
        assert isinstance(auth, httpx.Auth)
        assert isinstance(auth, httpx2.Auth)
        assert isinstance(auth, TokenAuth)
        async with http_module.AsyncClient(auth=auth) as http:
            response = await http.get(idp.resource_url)
    assert response.status_code == 200
    assert idp.resource_rejections == 0


@pytest.mark.parametrize("module", [httpx, httpx2])
def test_sync_clients_are_refused_on_both_stacks(module):
    """A synchronous client of either library gets a RuntimeError naming the async clients."""
    auth = TokenManager().auth("acme")
    with module.Client(auth=auth) as http, pytest.raises(RuntimeError, match="AsyncClient"):
        http.get("https://api.example/x")


# -- aiohttp's transport (asyncio only) --------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aiohttp_stack_fetches_and_calls():
    """On asyncio, token requests and client(stack="aiohttp") both go through aiohttp."""
    from httpx_aiohttp.httpx2 import AiohttpTransport

    async with IdentityProvider() as idp, TokenManager(http="aiohttp") as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        assert tokens._endpoint is not None
        assert isinstance(tokens._endpoint._client._transport, AiohttpTransport)
        async with tokens.client("acme", stack="aiohttp") as http:
            assert isinstance(http._transport, AiohttpTransport)
            statuses = [(await http.get(idp.resource_url)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert idp.token_requests == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_aiohttp_stack_under_trio_is_a_configuration_error():
    """Under trio, the aiohttp stack is refused with a message that names the alternative."""
    with pytest.raises(ConfigurationError, match=r"asyncio only.*httpx2"):
        async with TokenManager(http="aiohttp"):
            pass  # pragma: no cover
    with pytest.raises(ConfigurationError, match="asyncio only"):
        TokenManager().client("acme", stack="aiohttp")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_auto_is_the_fastest_stack_the_loop_runs(monkeypatch, anyio_backend):
    """Without $TOKENFLIGHT_HTTP, "auto" is aiohttp's transport on asyncio, httpx2 on trio."""
    from httpx_aiohttp.httpx2 import AiohttpTransport

    monkeypatch.delenv("TOKENFLIGHT_HTTP", raising=False)
    tokens = TokenManager()  # made outside the loop's choice: decided on entry
    async with tokens:
        assert tokens._endpoint is not None
        client = tokens._endpoint._client
        assert isinstance(client, httpx2.AsyncClient)
        on_aiohttp = isinstance(client._transport, AiohttpTransport)
        assert on_aiohttp == (anyio_backend == "asyncio")
        async with tokens.client("acme") as http:
            assert isinstance(http._transport, AiohttpTransport) == on_aiohttp
