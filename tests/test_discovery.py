"""Discovery (RFC 8414, then OpenID Connect) of the token endpoint and auth method."""

from __future__ import annotations

import anyio
import pytest
from joserfc.jwk import RSAKey

from tokenflight import (
    ClientAuth,
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ConfigurationError,
    PrivateKeyJWT,
    TokenManager,
)
from tokenflight._discovery import metadata_urls
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

LONG_SECRET = "a-client-secret-of-more-than-32-bytes!"


def discovering(idp: IdentityProvider, auth: ClientAuth | None) -> ClientCredentials:
    """Credentials with the issuer only, authenticating with `auth` (default: a ClientSecret)."""
    auth = ClientSecret("s3cret") if auth is None else auth
    return ClientCredentials(issuer=idp.url, client_id="acme", auth=auth)


async def one_token(idp: IdentityProvider, auth: ClientAuth | None = None) -> None:
    creds = discovering(idp, auth)
    async with TokenManager() as tokens:
        tokens.register("t", creds)
        assert (await tokens.get_token("t")).access_token


async def config_error(idp: IdentityProvider, auth: ClientAuth | None = None) -> ConfigurationError:
    creds = discovering(idp, auth)
    async with TokenManager() as tokens:
        tokens.register("t", creds)
        with pytest.raises(ConfigurationError) as caught:
            await tokens.get_token("t")
        return caught.value


async def test_token_endpoint_is_discovered_from_rfc8414_metadata():
    """An issuer alone finds the token endpoint through the RFC 8414 document."""
    async with IdentityProvider(profile="dwolla") as idp:
        idp.add_client("acme", "s3cret")
        idp.metadata_documents = {"oauth-authorization-server"}
        await one_token(idp, ClientSecretBasic("s3cret"))
        assert idp.metadata_requests == 1
        assert idp.requests[0].auth_method == "client_secret_basic"


async def test_openid_configuration_is_the_fallback():
    """Without an RFC 8414 document, /.well-known/openid-configuration is used."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", "s3cret")
        idp.metadata_documents = {"openid-configuration"}
        await one_token(idp)
        assert idp.metadata_requests == 2
        assert idp.token_requests == 1


async def test_discovered_method_is_what_the_registration_most_likely_allows():
    """A PrivateKeyJWT is used as given; a ClientSecret that could sign still gets Basic."""
    key = RSAKey.generate_key(2048, private=True)
    async with IdentityProvider() as idp:  # its metadata lists client_secret_jwt too
        idp.add_client("acme", LONG_SECRET, public_key=key.as_dict(private=False))
        await one_token(idp, PrivateKeyJWT(key.as_pem(private=True).decode()))
        await one_token(idp, ClientSecret(LONG_SECRET))
        methods = [r.auth_method for r in idp.requests]
        assert methods == ["private_key_jwt", "client_secret_basic"]


ALL_SECRET_METHODS = ["client_secret_jwt", "client_secret_post", "client_secret_basic"]


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["client_secret_post", "client_secret_basic"], "client_secret_basic"),
        (["client_secret_post"], "client_secret_post"),
        (["client_secret_jwt", "client_secret_post"], "client_secret_post"),
        (["private_key_jwt", *ALL_SECRET_METHODS], "client_secret_basic"),
        (None, "client_secret_basic"),  # RFC 8414: absent means client_secret_basic
    ],
)
async def test_method_choice_follows_the_metadata(offered, expected):
    """A secret gets Basic when listed, else the form body; never a JWT method unasked."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", LONG_SECRET)
        idp.metadata_overrides = {"token_endpoint_auth_methods_supported": offered}
        await one_token(idp, ClientSecret(LONG_SECRET))  # long enough for client_secret_jwt
        assert idp.requests[0].auth_method == expected


async def test_only_client_secret_jwt_listed_is_a_configuration_error():
    """A secret at a server listing only client_secret_jwt: a ConfigurationError, no guess."""
    async with IdentityProvider() as idp:
        idp.metadata_overrides = {"token_endpoint_auth_methods_supported": ["client_secret_jwt"]}
        error = await config_error(idp, ClientSecret(LONG_SECRET))
        assert "use auth=ClientSecretJWT(secret) if the client is registered" in str(error)
        assert idp.token_requests == 0


async def test_no_fitting_method_is_a_configuration_error():
    """A secret-only client at a server taking private_key_jwt only gets a ConfigurationError."""
    async with IdentityProvider() as idp:
        idp.metadata_overrides = {"token_endpoint_auth_methods_supported": ["private_key_jwt"]}
        error = await config_error(idp)
        assert "supports ['private_key_jwt']" in str(error)
        assert idp.token_requests == 0


async def test_issuer_mismatch_is_refused():
    """Metadata naming another issuer is refused (RFC 8414 section 3.3) and never used."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", "s3cret")
        idp.metadata_overrides = {"issuer": "https://evil.example"}
        error = await config_error(idp)
        assert "https://evil.example" in str(error)
        assert idp.token_requests == 0


async def test_no_metadata_is_a_configuration_error():
    """An issuer serving neither document raises ConfigurationError after trying both."""
    async with IdentityProvider() as idp:
        idp.metadata_documents = set()
        error = await config_error(idp)
        assert "publishes no authorization server metadata" in str(error)
        assert idp.metadata_requests == 2


async def test_metadata_is_fetched_once_for_concurrent_tenants():
    """Twenty tenants of one issuer, all cold at once, cause one metadata request."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "s3cret")
        for n in range(20):
            tokens.register(
                f"t{n}",
                ClientCredentials(
                    issuer=idp.url, client_id="acme", auth=ClientSecret("s3cret"), scopes=(f"s{n}",)
                ),
            )
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(tokens.get_token, f"t{n}")
        assert idp.metadata_requests == 1
        assert idp.token_requests == 20


def test_metadata_urls_for_an_issuer_with_a_path():
    """RFC 8414 inserts the well-known segment before the path; OIDC appends it."""
    assert metadata_urls("https://idp.example/tenant/1") == (
        "https://idp.example/.well-known/oauth-authorization-server/tenant/1",
        "https://idp.example/tenant/1/.well-known/openid-configuration",
    )
    assert metadata_urls("https://idp.example")[0] == (
        "https://idp.example/.well-known/oauth-authorization-server"
    )
