"""APIs that reject tokens, and tokens that expire on arrival: no token request per call."""

from __future__ import annotations

import pytest

from helpers import api_server
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    RetryPolicy,
    TokenEndpointUnavailable,
    TokenManager,
)
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "rejections-secret"


async def test_an_api_that_rejects_every_token_costs_few_token_requests():
    """50 calls to an API that answers 401 to every token make 3 token requests, not 50."""
    async with IdentityProvider() as idp, api_server(lambda token: 401) as url:
        idp.add_client("acme", SECRET)
        creds = ClientCredentials(
            token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(SECRET)
        )
        async with TokenManager(retry=RetryPolicy(cooldown=60.0)) as tokens:
            tokens.register("acme", creds)
            async with tokens.client("acme", base_url=url) as http:
                statuses = [(await http.get("/thing")).status_code for _ in range(50)]
        assert statuses == [401] * 50
        # The first token, its replacement, and one more; then 401s stand for the cooldown.
        assert idp.token_requests == 3


async def test_a_revoked_token_is_replaced_and_the_call_succeeds(idp):
    """Revoked tokens are replaced at once (the call succeeds) until they come in a streak."""
    revoked: set[str] = set()
    secret = idp.clients["acme"].secret
    creds = ClientCredentials(
        token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(secret)
    )
    async with (
        api_server(lambda token: 401 if token in revoked else 200) as url,
        TokenManager(retry=RetryPolicy(cooldown=60.0)) as tokens,
    ):
        tokens.register("acme", creds)
        async with tokens.client("acme", base_url=url) as http:
            statuses = []
            for _ in range(3):
                revoked.add((await tokens.get_token("acme")).access_token)
                statuses.append((await http.get("/thing")).status_code)
    # Two revocations are answered with new tokens; the third in a row stands for now.
    assert statuses == [200, 200, 401]
    assert idp.token_requests == 3


async def test_tokens_expiring_on_arrival_cool_down():
    """Tokens that expire before they arrive are a failure with a cooldown, not a loop."""
    async with IdentityProvider(token_lifetime=0.001) as idp:
        idp.add_client("acme", SECRET)
        idp.inject(Fault(delay=0.05))  # arrives well after its 1 ms lifetime
        creds = ClientCredentials(
            token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(SECRET)
        )
        async with TokenManager(retry=RetryPolicy(cooldown=60.0)) as tokens:
            tokens.register("acme", creds)
            for _ in range(10):
                with pytest.raises(TokenEndpointUnavailable, match="expire before"):
                    await tokens.get_token("acme")
        assert idp.token_requests == 1
