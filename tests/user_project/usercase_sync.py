"""A user's synchronous code tested with tokenflight's fixtures (no async plugin needed)."""

import httpx
import pytest

from tokenflight import SyncTokenManager
from tokenflight.testing import PROFILE_NAMES


@pytest.mark.parametrize("tokenflight_idp", PROFILE_NAMES, indirect=True)
def test_synchronous_code(tokenflight_credentials, tokenflight_idp):
    with SyncTokenManager() as tokens:
        tokens.register("acme", tokenflight_credentials)
        with httpx.Client(auth=tokens.auth("acme")) as http:
            assert http.get(tokenflight_idp.resource_url).status_code == 200
