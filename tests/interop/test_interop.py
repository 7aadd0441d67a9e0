"""tokenflight against independent authorization servers: oidc-provider and Authlib."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any

import pytest
from joserfc.jwk import JWKRegistry, OctKey, RSAKey

from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    PrivateKeyJWT,
    Token,
    TokenManager,
    TokenRequestRefused,
)

from .conftest import (
    ALL_PRINTABLE,
    JWT_SECRET,
    NON_ASCII_SECRET,
    OTHER_RESOURCE,
    RESOURCE,
    TRICKY_SECRETS,
    Keys,
    Server,
)

pytestmark = pytest.mark.anyio


async def fetch(creds: ClientCredentials, **kwargs: Any) -> Token:
    """One token for `creds` from a fresh manager."""
    async with TokenManager() as tokens:
        tokens.register("t", creds)
        return await tokens.get_token("t", **kwargs)


async def refusal(creds: ClientCredentials, **kwargs: Any) -> TokenRequestRefused:
    """The refusal a token request for `creds` meets."""
    with pytest.raises(TokenRequestRefused) as caught:
        await fetch(creds, **kwargs)
    return caught.value


def claims(jwt: str) -> dict[str, Any]:
    """The payload of a compact JWT, unverified (the server is trusted here)."""
    payload = jwt.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


def private_key(jwk: dict[str, Any], form: str) -> str | dict[str, Any]:
    """The key as tokenflight takes it: a JWK dict or a PEM string."""
    if form == "jwk":
        return jwk
    key = JWKRegistry.import_key(jwk)
    assert not isinstance(key, OctKey)  # an asymmetric key pair: it has a PEM form
    return key.as_pem(private=True).decode()


@pytest.mark.parametrize("name", sorted(TRICKY_SECRETS))
async def test_basic_secret_of_printable_characters_is_accepted(server: Server, name: str):
    """client_secret_basic works with secrets of every printable ASCII character, space too."""
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id=f"basic-{name}",
        auth=ClientSecretBasic(TRICKY_SECRETS[name]),
    )
    token = await fetch(creds, scopes=("read",))
    assert token.access_token
    assert token.scope == ("read",)


async def test_basic_client_id_is_encoded_too(server: Server):
    """A client id holding `:`, `+`, `%` and a space reaches the server intact over Basic."""
    creds = ClientCredentials(
        token_url=server.token_url, client_id="id: with+%", auth=ClientSecretBasic(ALL_PRINTABLE)
    )
    assert (await fetch(creds)).access_token


async def test_basic_non_ascii_secret_is_accepted(server: Server):
    """A non-ASCII secret, UTF-8 then percent-encoded, is accepted over Basic."""
    if "basic-non-ascii" not in server.clients:
        pytest.skip(f"{server.name} takes only VSCHAR secrets (RFC 6749 appendix A.2)")
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="basic-non-ascii",
        auth=ClientSecretBasic(NON_ASCII_SECRET),
    )
    assert (await fetch(creds)).access_token


async def test_client_secret_post(server: Server):
    """client_secret_post sends id and secret in the form body, and is accepted."""
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="post",
        auth=ClientSecretPost(ALL_PRINTABLE),
    )
    assert (await fetch(creds)).access_token


async def test_client_secret_jwt(server: Server):
    """client_secret_jwt's HS256 assertion is accepted."""
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="secret-jwt",
        auth=ClientSecretJWT(JWT_SECRET),
    )
    assert (await fetch(creds)).access_token


@pytest.mark.parametrize("form", ["pem", "jwk"])
@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
async def test_private_key_jwt(server: Server, keys: Keys, alg: str, form: str):
    """private_key_jwt assertions signed with RS256, PS256 and ES256 keys, PEM or JWK, pass."""
    jwk = keys.by_alg(alg)
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id=f"key-{alg.lower()}",
        auth=PrivateKeyJWT(private_key(jwk, form), key_id=jwk["kid"], alg=alg),
    )
    assert (await fetch(creds)).access_token


async def test_discovery_with_a_secret_picks_basic(server: Server):
    """The issuer alone and a secret: Basic, the registration default, not a listed JWT method."""
    creds = ClientCredentials(
        issuer=server.issuer,
        client_id="basic-printable",
        auth=ClientSecret(ALL_PRINTABLE),  # long enough for client_secret_jwt, which is listed
        allow_insecure_http=True,
    )
    assert (await fetch(creds)).access_token


async def test_discovery_with_a_private_key_picks_private_key_jwt(server: Server, keys: Keys):
    """The issuer alone and a private key: private_key_jwt at the discovered endpoint."""
    creds = ClientCredentials(
        issuer=server.issuer, client_id="key-es256", auth=PrivateKeyJWT(keys.es256)
    )
    assert (await fetch(creds)).access_token


@pytest.mark.parametrize("resource", [RESOURCE, OTHER_RESOURCE])
async def test_resource_indicator_is_the_tokens_audience(server: Server, resource: str):
    """An RFC 8707 `resource` becomes the `aud` of the JWT access token issued for it."""
    server.require("resource indicators")
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="basic-printable",
        auth=ClientSecretBasic(ALL_PRINTABLE),
    )
    token = await fetch(creds, resource=resource, scopes=("read",))
    assert claims(token.access_token)["aud"] == resource
    assert token.scope == ("read",)


@pytest.mark.parametrize("client_id", ["dpop", "dpop-nonce"])
async def test_dpop_token_is_bound_to_the_proof_key(
    server: Server, client_id: str, http_module: ModuleType
):
    """A DPoP token (with or without a required nonce) is bound to the key of its proofs."""
    server.require("DPoP")
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id=client_id,
        auth=ClientSecretBasic(JWT_SECRET),
        dpop=True,
    )
    seen: list[Any] = []

    def resource_server(request: Any) -> Any:
        seen.append(request)
        return http_module.Response(200)

    transport = http_module.MockTransport(resource_server)
    async with TokenManager() as tokens:
        tokens.register("t", creds)
        token = await tokens.get_token("t", resource=RESOURCE)
        async with http_module.AsyncClient(transport=transport) as client:
            auth = tokens.auth("t", resource=RESOURCE)
            response = await client.get("https://api.example/orders", auth=auth)
    assert response.status_code == 200
    assert token.token_type == "DPoP"
    proof_jwk = json.loads(base64.urlsafe_b64decode(seen[0].headers["DPoP"].split(".")[0] + "=="))
    thumbprint = JWKRegistry.import_key(proof_jwk["jwk"]).thumbprint()
    assert claims(token.access_token)["cnf"] == {"jkt": thumbprint}
    assert seen[0].headers["Authorization"] == f"DPoP {token.access_token}"


def test_dpop_nonce_client_really_needs_a_nonce(oidc_provider: Server):
    """The nonce case is real: a proof without a nonce gets use_dpop_nonce and a DPoP-Nonce."""
    import httpx

    from tokenflight._client_auth import basic_authorization
    from tokenflight._dpop import DPoPProver, NonceBook

    proof = DPoPProver(NonceBook()).proof("POST", oidc_provider.token_url)
    response = httpx.post(
        oidc_provider.token_url,
        data={"grant_type": "client_credentials"},
        headers={"DPoP": proof, "Authorization": basic_authorization("dpop-nonce", JWT_SECRET)},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "use_dpop_nonce"
    assert response.headers["DPoP-Nonce"]


async def test_wrong_secret_is_invalid_client(server: Server):
    """A wrong secret is refused with invalid_client, a typed TokenRequestRefused."""
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="basic-printable",
        auth=ClientSecretBasic("not-the-secret"),
    )
    error = await refusal(creds)
    assert error.error == "invalid_client"
    assert error.status_code in (400, 401)


async def test_wrong_key_is_invalid_client(server: Server, keys: Keys):
    """An assertion signed with a key the client did not register is invalid_client."""
    creds = ClientCredentials(
        token_url=server.token_url, client_id="key-rs256", auth=PrivateKeyJWT(keys.stranger)
    )
    assert (await refusal(creds)).error == "invalid_client"


async def test_unknown_resource_is_invalid_target(server: Server):
    """A `resource` the server does not know is refused with invalid_target (RFC 8707)."""
    server.require("resource indicators")
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="basic-printable",
        auth=ClientSecretBasic(ALL_PRINTABLE),
    )
    error = await refusal(creds, resource="https://unknown.example/")
    assert error.error == "invalid_target"


async def test_forbidden_scope_is_invalid_scope(server: Server):
    """A scope the client may not have is refused with invalid_scope."""
    creds = ClientCredentials(
        token_url=server.token_url,
        client_id="basic-printable",
        auth=ClientSecretBasic(ALL_PRINTABLE),
    )
    assert (await refusal(creds, scopes=("admin",))).error == "invalid_scope"


def test_stranger_key_differs_from_the_registered_one(keys: Keys):
    """The wrong-key test's key shares the registered key's `kid` but not its modulus."""
    stranger, registered = (RSAKey.import_key(k) for k in (keys.stranger, keys.rs256))
    assert stranger.kid == registered.kid
    assert stranger.thumbprint() != registered.thumbprint()
