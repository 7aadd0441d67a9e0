"""JWT access tokens without expires_in: the lifetime comes from their exp claim."""

from __future__ import annotations

import json

import httpx
import pytest

from helpers import creds
from tokenflight import RefreshPolicy, TokenManager
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio


async def test_lifetime_is_read_from_a_signed_jwt_access_tokens_exp():
    """With expires_in left out, the token's lifetime is its JWT exp, not the default."""
    async with IdentityProvider(token_lifetime=1234) as idp:
        idp.add_client("acme", "s3cret")
        idp.jwt_access_tokens = True
        async with httpx.AsyncClient() as http:
            raw = await http.post(
                idp.token_url,
                data={"grant_type": "client_credentials"},
                auth=("acme", "s3cret"),
            )
        assert "expires_in" not in raw.json()
        assert raw.json()["access_token"].count(".") == 2
        async with TokenManager(refresh=RefreshPolicy(default_lifetime=60)) as tokens:
            tokens.register("t", creds(idp))
            token = await tokens.get_token("t")
            assert 1228 <= token.expires_in <= 1234
            async with httpx.AsyncClient(auth=tokens.auth("t")) as api:
                response = await api.get(idp.resource_url)
            assert response.status_code == 200


async def test_opaque_token_without_expires_in_gets_the_default_lifetime():
    """An opaque token with no expires_in lives the configured default_lifetime."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", "s3cret")
        body = json.dumps({"access_token": "opaque-token", "token_type": "Bearer"}).encode()
        idp.inject(Fault(status=200, body=body))
        async with TokenManager(refresh=RefreshPolicy(default_lifetime=42)) as tokens:
            tokens.register("t", creds(idp))
            assert (await tokens.get_token("t")).expires_in == 42


async def test_expired_jwt_without_expires_in_gets_the_default_lifetime():
    """A JWT whose exp already passed is not trusted: the default lifetime applies."""
    from joserfc import jwt
    from joserfc.jwk import OctKey

    stale = jwt.encode({"alg": "HS256"}, {"exp": 1000}, OctKey.import_key(b"k" * 32))
    async with IdentityProvider() as idp:
        idp.add_client("acme", "s3cret")
        body = json.dumps({"access_token": stale, "token_type": "Bearer"}).encode()
        idp.inject(Fault(status=200, body=body))
        async with TokenManager(refresh=RefreshPolicy(default_lifetime=42)) as tokens:
            tokens.register("t", creds(idp))
            assert (await tokens.get_token("t")).expires_in == 42
