"""Credential rotation with a resolver: refused credentials are re-resolved once."""

from __future__ import annotations

import pytest

from tokenflight import (
    ClientCredentials,
    RetryPolicy,
    TokenManager,
    TokenRequestRefused,
    UnknownTenantError,
)

pytestmark = pytest.mark.anyio


class Database:
    """The user's tenant store: the resolver reads it, and counts its reads."""

    def __init__(self, idp, secret: str) -> None:
        self.idp = idp
        self.secret: str | None = secret
        self.reads = 0

    async def resolve(self, tenant: str) -> ClientCredentials | None:
        self.reads += 1
        if tenant != "acme" or self.secret is None:
            return None
        return ClientCredentials(
            token_url=self.idp.token_url, client_id="acme", client_secret=self.secret
        )


async def test_rotated_secret_is_re_resolved_and_takes_effect_at_once(idp):
    """After a rotation, invalid_client re-asks the resolver once and the call succeeds."""
    db = Database(idp, "stale-secret")
    rotated = idp.clients["acme"].secret

    async def resolver(tenant: str) -> ClientCredentials | None:
        answer = await db.resolve(tenant)
        db.secret = rotated  # rotated in the database right after the first read
        return answer

    async with TokenManager(resolver=resolver) as tokens:
        assert (await tokens.get_token("acme")).access_token
    assert db.reads == 2
    assert idp.token_requests == 2  # one refused, one granted


async def test_unchanged_credentials_keep_the_refusal(idp):
    """If the resolver gives back the same refused credentials, the refusal stands."""
    db = Database(idp, "wrong-secret")
    async with TokenManager(resolver=db.resolve, retry=RetryPolicy(permanent_cooldown=60)) as t:
        with pytest.raises(TokenRequestRefused):
            await t.get_token("acme")
        with pytest.raises(TokenRequestRefused):  # remembered: no new request, no new read
            await t.get_token("acme")
    assert db.reads == 2
    assert idp.token_requests == 1


async def test_unknown_tenants_are_remembered_briefly(idp):
    """A tenant the resolver does not know is not asked for again within the cooldown."""
    db = Database(idp, "x")
    async with TokenManager(resolver=db.resolve, retry=RetryPolicy(cooldown=60)) as tokens:
        for _ in range(10):
            with pytest.raises(UnknownTenantError):
                await tokens.get_token("bogus")
    assert db.reads == 1


async def test_credentials_ttl_asks_the_resolver_again(idp):
    """With credentials_ttl=0 every token request first re-reads the credentials."""
    db = Database(idp, idp.clients["acme"].secret)
    async with TokenManager(resolver=db.resolve, credentials_ttl=0) as tokens:
        for _ in range(3):
            await tokens.get_token("acme")
            tokens.invalidate("acme")
    assert db.reads == 4  # the first resolution, then once before each later fetch
    assert idp.token_requests == 3
