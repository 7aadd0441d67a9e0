"""What a user's own tests look like with tokenflight's fixtures."""

import os

import pytest

from tokenflight import TokenEndpointUnavailable
from tokenflight.testing import PROFILE_NAMES, Fault, set_testing

# How each plugin wants async tests marked: anyio's marker, pytest-asyncio's in strict mode,
# nothing in auto mode.
MODE = os.environ["USER_MODE"]
if MODE == "anyio":
    pytestmark = [pytest.mark.anyio]
elif MODE == "strict":  # only where pytest-asyncio registers the marker
    pytestmark = [pytest.mark.asyncio]


async def test_gets_a_token(tokenflight_manager, tokenflight_idp):
    token = await tokenflight_manager.get_token("test")
    assert token.access_token
    assert tokenflight_idp.token_requests == 1


async def test_calls_an_api_with_the_token(tokenflight_manager, tokenflight_idp):
    async with tokenflight_manager.client("test") as http:
        assert (await http.get(tokenflight_idp.resource_url)).status_code == 200


async def test_fault_injection(tokenflight_manager, tokenflight_idp):
    tokenflight_idp.inject(Fault(status=503), count=None)
    with set_testing(attempts=2), pytest.raises(TokenEndpointUnavailable):
        await tokenflight_manager.get_token("test")
    assert tokenflight_idp.token_requests == 2


@pytest.mark.parametrize("tokenflight_idp", PROFILE_NAMES, indirect=True)
async def test_every_provider_profile(tokenflight_manager, tokenflight_idp):
    token = await tokenflight_manager.get_token("test")
    assert token.expires_in == pytest.approx(tokenflight_idp.profile.token_lifetime, abs=2)
    async with tokenflight_manager.client("test") as http:
        assert (await http.get(tokenflight_idp.resource_url)).status_code == 200
