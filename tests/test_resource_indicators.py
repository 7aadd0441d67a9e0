"""RFC 8707 resource indicators given one or several times."""

from __future__ import annotations

import pytest

from helpers import creds
from tokenflight import ClientCredentials, ClientSecretBasic, ConfigurationError, TokenManager
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

A = "https://a.example/api"
B = "https://b.example/api"


async def test_several_resources_are_all_sent_and_share_one_slot():
    """Each resource is sent as its own form field; any order of the same set is one token."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret", audiences=[A, B])
        tokens.register("t", creds(idp))
        first = await tokens.get_token("t", resource=[B, A])
        again = await tokens.get_token("t", resource=(A, B))
        assert again is first
        (record,) = idp.requests
        assert sorted(record.resource) == [A, B]
        single = await tokens.get_token("t", resource=[A])
        assert single is await tokens.get_token("t", resource=A)
        assert single is not first
        assert idp.requests[1].resource == (A,)
        assert idp.token_requests == 2


async def test_default_resources_from_credentials_key_the_default_slot():
    """Resources in ClientCredentials are sent by default and spelt out they hit the same slot."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret", audiences=[A, B])
        tokens.register("t", creds(idp, resource=[B, A]))
        default = await tokens.get_token("t")
        assert await tokens.get_token("t", resource=[A, B]) is default
        assert idp.token_requests == 1
        assert sorted(idp.requests[0].resource) == [A, B]
        assert tokens.invalidate("t", resource=[B, A])
        assert await tokens.get_token("t") is not default


async def test_resource_not_allowed_is_invalid_target():
    """A resource the client may not use is refused with invalid_target."""
    from tokenflight import TokenRequestRefused

    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret", audiences=[A])
        tokens.register("t", creds(idp))
        with pytest.raises(TokenRequestRefused) as caught:
            await tokens.get_token("t", resource=[A, B])
        assert caught.value.error == "invalid_target"


@pytest.mark.parametrize("bad", [[], ["relative/path"], ["https://x.example/#frag"], [A, 3]])
def test_bad_resources_are_configuration_errors(bad):
    """An empty list, a relative URI, a fragment or a non-string is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        ClientCredentials(
            token_url="https://idp.example/t",
            client_id="c",
            auth=ClientSecretBasic("s"),
            resource=bad,
        )
