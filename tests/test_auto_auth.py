"""ClientSecret with a token_url: Basic first, the form body once on invalid_client, remembered."""

from __future__ import annotations

import pytest

from tokenflight import ClientCredentials, ClientSecret, TokenManager, TokenRequestRefused
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio


def auto(idp: IdentityProvider, secret: str = "s3cret", **kwargs) -> ClientCredentials:
    return ClientCredentials(
        token_url=idp.token_url,
        client_id="acme",
        auth=ClientSecret(secret),
        **kwargs,
    )


async def test_auto_falls_back_to_the_form_body_and_remembers_it():
    """At a form-only endpoint, Basic is refused once; later fetches go straight to the form."""
    async with IdentityProvider(profile="dwolla-legacy") as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret")
        tokens.register("a", auto(idp))
        tokens.register("b", auto(idp, scopes=("other",)))
        first = await tokens.get_token("a")
        assert tokens.invalidate("a", token=first)
        await tokens.get_token("a")
        await tokens.get_token("b")
        seen = [(r.auth_method, r.status) for r in idp.requests]
        assert seen == [
            ("client_secret_basic", 401),
            ("client_secret_post", 200),
            ("client_secret_post", 200),
            ("client_secret_post", 200),
        ]


async def test_auto_keeps_basic_where_it_works():
    """At an endpoint taking Basic, auto sends Basic only."""
    async with IdentityProvider(profile="dwolla") as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret")
        tokens.register("a", auto(idp))
        await tokens.get_token("a")
        assert [r.auth_method for r in idp.requests] == ["client_secret_basic"]


async def test_auto_with_a_wrong_secret_tries_each_once_and_remembers_nothing():
    """A wrong secret is refused by both methods, once each; nothing is remembered."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret")
        tokens.register("a", auto(idp, secret="wrong"))
        with pytest.raises(TokenRequestRefused) as caught:
            await tokens.get_token("a")
        assert caught.value.error == "invalid_client"
        assert [r.auth_method for r in idp.requests] == [
            "client_secret_basic",
            "client_secret_post",
        ]
        tokens.register("a", auto(idp))
        await tokens.get_token("a")
        assert idp.requests[-1].auth_method == "client_secret_basic"


async def test_auto_does_not_retry_other_refusals():
    """A refusal other than invalid_client (here invalid_scope) is raised after one request."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret", scopes=["read"])
        tokens.register("a", auto(idp, scopes=("write",)))
        with pytest.raises(TokenRequestRefused) as caught:
            await tokens.get_token("a")
        assert caught.value.error == "invalid_scope"
        assert idp.token_requests == 1
