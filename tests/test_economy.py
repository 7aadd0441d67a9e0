"""Token economy: tenants called now and then over a day pay for one token each."""

from __future__ import annotations

import json
import random

import anyio
import httpx
import pytest
import trio.testing

from tokenflight import ClientCredentials, TokenManager

pytestmark = pytest.mark.anyio

DAY = 86_400.0


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_a_day_of_sparse_calls_costs_one_token_per_tenant():
    """100 tenants with 24-hour tokens, called 1-60 min apart for a day: 100 requests."""
    tenants = 100
    requests = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        body = {"access_token": f"tok-{requests}", "token_type": "Bearer", "expires_in": DAY}
        return httpx.Response(200, content=json.dumps(body).encode())

    rng = random.Random(10)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        TokenManager(http_client=http) as tokens,
    ):
        for n in range(tenants):
            tokens.register(
                f"t{n}",
                ClientCredentials(
                    token_url="https://idp.example/token", client_id=f"c{n}", client_secret="x"
                ),
            )

        async def tenant(name: str) -> None:
            when = rng.uniform(60, 3600)
            while when < DAY:
                await anyio.sleep_until(when)
                await tokens.get_token(name)
                when += rng.uniform(60, 3600)

        async with anyio.create_task_group() as tg:
            for n in range(tenants):
                tg.start_soon(tenant, f"t{n}")
        stats = tokens.stats()
    assert requests == tenants
    assert stats.total.refreshes == 0
    assert stats.total.hits > 40 * tenants  # about 47 calls per tenant
    assert stats.evictions == 0
