"""tokenflight.testing.set_testing: a plain switch, or a context manager that restores."""

from __future__ import annotations

import pytest

from tokenflight import ClientCredentials, ClientSecretBasic, TokenEndpointUnavailable, TokenManager
from tokenflight._endpoint import _testing
from tokenflight.testing import Fault, set_testing

pytestmark = pytest.mark.anyio


async def test_attempts_caps_retries_and_the_mode_is_restored(idp):
    """Inside `with set_testing(attempts=1)` a 503 is not retried; after it, the mode is back."""
    idp.inject(Fault(status=503), count=None)
    secret = idp.clients["acme"].secret
    creds = ClientCredentials(
        token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(secret)
    )
    with set_testing(attempts=1):
        assert _testing.no_wait
        async with TokenManager() as tokens:
            tokens.register("acme", creds)
            with pytest.raises(TokenEndpointUnavailable):
                await tokens.get_token("acme")
    assert idp.token_requests == 1
    assert not _testing.no_wait
    assert _testing.attempts is None


def test_plain_call_still_switches_and_nests():
    """set_testing() as a call switches the mode; nested context managers restore in order."""
    set_testing(True)
    try:
        with set_testing(False):
            assert not _testing.no_wait
        assert _testing.no_wait
    finally:
        set_testing(False)
    assert not _testing.no_wait


def test_attempts_must_be_positive():
    """attempts=0 is refused with a ValueError."""
    with pytest.raises(ValueError, match="positive"):
        set_testing(attempts=0)
