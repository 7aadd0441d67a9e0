"""Credential rotation with a resolver: refused credentials are re-resolved once."""

from __future__ import annotations

import anyio
import pytest

from helpers import gather_tokens
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    RetryPolicy,
    TokenManager,
    TokenRequestRefused,
    UnknownTenantError,
)
from tokenflight._resolver import Resolver
from tokenflight.testing import Fault

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
            token_url=self.idp.token_url, client_id="acme", auth=ClientSecretBasic(self.secret)
        )


def rotated_after_first_read(db: Database, rotated: str) -> Resolver:
    """A resolver over `db` whose secret is rotated right after its first read."""

    async def resolver(tenant: str) -> ClientCredentials | None:
        answer = await db.resolve(tenant)
        db.secret = rotated
        return answer

    return resolver


async def test_rotated_secret_is_re_resolved_and_takes_effect_at_once(idp):
    """After a rotation, invalid_client re-asks the resolver once and the call succeeds."""
    db = Database(idp, "stale-secret")
    resolver = rotated_after_first_read(db, idp.clients["acme"].secret)
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


async def test_unauthorized_client_re_resolves_too(idp):
    """unauthorized_client, like invalid_client, re-asks the resolver once; new creds win."""
    db = Database(idp, "stale-secret")
    resolver = rotated_after_first_read(db, idp.clients["acme"].secret)
    idp.inject(Fault(status=400, body=b'{"error": "unauthorized_client"}'))
    async with TokenManager(resolver=resolver) as tokens:
        assert (await tokens.get_token("acme")).access_token
    assert db.reads == 2
    assert idp.token_requests == 2  # the refused one, then one with the new secret


async def test_other_refusals_do_not_re_resolve(idp):
    """A refusal that is not about the client (invalid_scope) does not ask the resolver."""
    db = Database(idp, idp.clients["acme"].secret)
    idp.inject(Fault(status=400, body=b'{"error": "invalid_scope"}'))
    async with TokenManager(resolver=db.resolve) as tokens:
        with pytest.raises(TokenRequestRefused, match="invalid_scope"):
            await tokens.get_token("acme")
    assert db.reads == 1
    assert idp.token_requests == 1


async def test_twenty_callers_on_a_refused_tenant_re_resolve_once(idp):
    """20 concurrent callers, rotated secret: one resolution, one re-resolution, one token."""
    db = Database(idp, "stale-secret")
    resolver = rotated_after_first_read(db, idp.clients["acme"].secret)

    async with TokenManager(resolver=resolver) as tokens:
        got = await gather_tokens(tokens, ["acme"] * 20)
    assert len({token.access_token for token in got}) == 1
    assert db.reads == 2
    assert idp.token_requests == 2


async def test_twenty_keys_of_a_refused_tenant_re_resolve_once(idp):
    """20 keys (scope sets) of one tenant refused together re-read its credentials once."""
    db = Database(idp, "stale-secret")
    resolver = rotated_after_first_read(db, idp.clients["acme"].secret)

    refused: list[TokenRequestRefused] = []
    async with TokenManager(resolver=resolver) as tokens:

        async def one(scope: str) -> None:
            try:
                await tokens.get_token("acme", scopes=(scope,))
            except TokenRequestRefused as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, f"scope{i}")
    assert refused == []
    assert db.reads == 2
    assert idp.token_requests <= 40  # at most: each key refused once, then granted


async def test_the_unknown_tenant_memory_is_bounded(idp, monkeypatch):
    """Past its cap the negative cache forgets the oldest unknown tenant, never grows."""
    import tokenflight._flight

    monkeypatch.setattr(tokenflight._flight, "MAX_REMEMBERED", 50)
    db = Database(idp, "x")
    async with TokenManager(resolver=db.resolve, retry=RetryPolicy(cooldown=60)) as tokens:
        for i in range(60):
            with pytest.raises(UnknownTenantError):
                await tokens.get_token(f"bogus{i}")
        assert db.reads == 60
        with pytest.raises(UnknownTenantError):
            await tokens.get_token("bogus59")  # the newest: remembered
        assert db.reads == 60
        for i in range(10):  # the ten oldest were forgotten to stay within 50
            with pytest.raises(UnknownTenantError):
                await tokens.get_token(f"bogus{i}")
        assert db.reads == 70
        with pytest.raises(UnknownTenantError):
            await tokens.get_token("bogus30")  # within the cap: still remembered
        assert db.reads == 70
