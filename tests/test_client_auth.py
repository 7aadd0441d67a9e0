"""Client authentication values (issue 12): validation, the one preference order, the
Entra ID `x5t#S256` header, certificate-bound tokens and expiring discovery metadata."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import RSAKey

from helpers import self_signed_certificate
from test_jwt_auth import LONG_SECRET, NO_SCOPE, claims_of, pem
from test_mtls import PKI
from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    ConfigurationError,
    MutualTLS,
    PrivateKeyJWT,
    RetryPolicy,
    SelfSignedMutualTLS,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight._client_auth import candidates, choose
from tokenflight._discovery import (
    DEFAULT_METADATA_TTL,
    MAX_METADATA_TTL,
    MIN_METADATA_TTL,
    Discovery,
    metadata_ttl,
)
from tokenflight._endpoint import build_form
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

URL = "https://idp.example/oauth/token"
NO_REQUEST = NO_SCOPE


def rsa_pem(key: RSAKey) -> str:
    return pem(key)


def certificate_for(key: RSAKey, name: str = "signer") -> str:
    """A self-signed certificate of an RSA key, PEM (what Entra ID registers)."""
    private = serialization.load_pem_private_key(key.as_pem(private=True), password=None)
    return self_signed_certificate(private, name).decode()


def assertion_header(creds: ClientCredentials) -> dict[str, object]:
    form, _ = build_form(creds, NO_REQUEST)
    return claims_of(str(form["client_assertion"]))[0]


# -- the values ----------------------------------------------------------------------


def test_no_value_shows_its_secret_or_key():
    """The repr of every value, and of credentials holding it, hides secrets and keys."""
    key = RSAKey.generate_key(2048)
    values = [
        ClientSecretBasic(LONG_SECRET),
        ClientSecretPost(LONG_SECRET),
        ClientSecret(LONG_SECRET),
        ClientSecretJWT(LONG_SECRET),
        PrivateKeyJWT(rsa_pem(key)),
        PrivateKeyJWT(key.as_dict(private=True)),
    ]
    for value in values:
        creds = ClientCredentials(token_url=URL, client_id="c", auth=value)
        text = repr(value) + repr(creds) + str(creds)
        assert LONG_SECRET not in text
        assert "PRIVATE" not in text
        assert str(key.as_dict(private=True)["d"]) not in text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClientSecretBasic(""), "secret is empty"),
        (lambda: ClientSecretPost(None), "secret is empty"),  # type: ignore[arg-type]
        (lambda: ClientSecretJWT("short"), "at least 32 bytes"),
        (lambda: ClientSecretJWT(LONG_SECRET, alg="RS256"), "signs with HS256"),
        (lambda: ClientSecretJWT(LONG_SECRET, lifetime=0), "between 1 and 3600"),
        (lambda: PrivateKeyJWT("-----BEGIN nonsense"), "could not be read"),
        (lambda: PrivateKeyJWT(RSAKey.generate_key(2048).as_dict(private=False)), "public key"),
        (lambda: PrivateKeyJWT(rsa_pem(RSAKey.generate_key(2048)), alg="ES256"), "does not fit"),
        (lambda: PrivateKeyJWT(rsa_pem(RSAKey.generate_key(2048)), audience="x"), "absolute"),
        (lambda: MutualTLS(""), "file path"),
        (lambda: SelfSignedMutualTLS("c.pem", key=""), "file path"),
    ],
)
def test_values_check_themselves_when_made(make, message):
    """A value that cannot work is a ConfigurationError when it is made, saying why."""
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_credentials_check_what_depends_on_them():
    """auth= must be a value; audience='issuer' needs an issuer; auth= is required."""
    with pytest.raises(ConfigurationError, match="client authentication value"):
        ClientCredentials(token_url=URL, client_id="c", auth="secret")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs the credentials' issuer"):
        ClientCredentials(
            token_url=URL, client_id="c", auth=ClientSecretJWT(LONG_SECRET, audience="issuer")
        )
    with pytest.raises(ConfigurationError, match="set auth="):
        ClientCredentials(token_url=URL, client_id="c")


def test_replace_switches_the_method_and_leaves_the_original():
    """dataclasses.replace gives credentials with the new method; the original is unchanged."""
    basic = ClientCredentials(token_url=URL, client_id="c", auth=ClientSecretBasic("s"))
    tls = dataclasses.replace(basic, auth=MutualTLS("c.pem", key="k.pem"))
    assert tls.client_auth == MutualTLS("c.pem", key="k.pem")
    assert tls.client_auth.tls == ("c.pem", "k.pem", None)
    assert basic.client_auth == ClientSecretBasic("s")
    assert basic.client_auth.tls is None


def test_each_value_applies_itself():
    """Basic sets the header, post the form; JWT methods a fresh assertion; mTLS only the id."""
    key = RSAKey.generate_key(2048)
    form, headers = build_form(
        ClientCredentials(token_url=URL, client_id="c", auth=ClientSecretBasic("s")), NO_REQUEST
    )
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"c:s").decode()
    assert "client_secret" not in form
    form, headers = build_form(
        ClientCredentials(token_url=URL, client_id="c", auth=ClientSecretPost("s")), NO_REQUEST
    )
    assert (form["client_id"], form["client_secret"]) == ("c", "s")
    assert "Authorization" not in headers
    signed = ClientCredentials(token_url=URL, client_id="c", auth=PrivateKeyJWT(rsa_pem(key)))
    first, _ = build_form(signed, NO_REQUEST)
    second, _ = build_form(signed, NO_REQUEST)
    assert first["client_assertion"] != second["client_assertion"]  # a new jti each time
    form, headers = build_form(
        ClientCredentials(token_url=URL, client_id="c", auth=MutualTLS("c.pem")), NO_REQUEST
    )
    assert dict(form) == {"grant_type": "client_credentials", "client_id": "c"}
    assert "Authorization" not in headers


# -- one preference order ------------------------------------------------------------


@pytest.mark.parametrize(
    ("supported", "chosen"),
    [
        (None, ClientSecretBasic),  # RFC 8414: client_secret_basic when the server is silent
        (["client_secret_jwt", "client_secret_basic", "client_secret_post"], ClientSecretBasic),
        (["client_secret_jwt", "private_key_jwt", "client_secret_post"], ClientSecretPost),
    ],
)
def test_discovery_picks_what_a_registration_most_likely_allows(supported, chosen):
    """A secret gets Basic when listed or unlisted, else post; never a JWT method unasked."""
    assert choose(ClientSecret("s"), supported) == chosen("s")


def test_a_secret_with_only_jwt_methods_listed_says_what_to_do():
    """A server offering only client_secret_jwt for a ClientSecret: a hint, not a guess."""
    with pytest.raises(ConfigurationError, match=r"use auth=ClientSecretJWT\(secret\)"):
        choose(ClientSecret("s"), ["client_secret_jwt"])


def test_explicit_values_are_kept_and_only_a_secret_is_negotiated():
    """An explicit method is the user's choice; ClientSecret alone tries Basic, then post."""
    explicit = ClientSecretPost("s")
    assert choose(explicit, ["client_secret_basic"]) is explicit
    assert candidates(explicit) == (explicit,)
    assert candidates(ClientSecret("s")) == (ClientSecretBasic("s"), ClientSecretPost("s"))


async def test_discovered_server_listing_only_post_gets_post():
    """Over real HTTP: an issuer whose metadata lists only client_secret_post gets it."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "acme-secret")
        idp.metadata_overrides["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
        tokens.register(
            "t",
            ClientCredentials(issuer=idp.url, client_id="acme", auth=ClientSecret("acme-secret")),
        )
        assert (await tokens.get_token("t")).access_token
        assert [r.auth_method for r in idp.requests] == ["client_secret_post"]


# -- Entra ID's x5t#S256 -------------------------------------------------------------


def test_certificate_thumbprint_goes_into_the_assertion_header():
    """PrivateKeyJWT(certificate=) puts the certificate's SHA-256 thumbprint in x5t#S256."""
    key = RSAKey.generate_key(2048)
    pem = certificate_for(key)
    creds = ClientCredentials(
        token_url=URL, client_id="c", auth=PrivateKeyJWT(rsa_pem(key), certificate=pem)
    )
    der = ssl.PEM_cert_to_DER_cert(pem)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert assertion_header(creds)["x5t#S256"] == expected
    plain = ClientCredentials(token_url=URL, client_id="c", auth=PrivateKeyJWT(rsa_pem(key)))
    assert "x5t#S256" not in assertion_header(plain)


def test_a_certificate_of_another_key_is_refused():
    """A certificate that does not hold the key's public half is a ConfigurationError."""
    key, other = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    with pytest.raises(ConfigurationError, match="does not hold the public half"):
        PrivateKeyJWT(rsa_pem(key), certificate=certificate_for(other))
    with pytest.raises(ConfigurationError, match=r"not a PEM X\.509 certificate"):
        PrivateKeyJWT(rsa_pem(key), certificate="-----BEGIN CERTIFICATE-----\nxx")


async def test_a_server_that_wants_x5t_s256_gets_it():
    """Against an IdP that requires x5t#S256 (as Entra ID does): with the certificate a
    token, without it invalid_client."""
    key = RSAKey.generate_key(2048)
    pem = certificate_for(key)
    async with IdentityProvider() as idp, TokenManager(retry=RetryPolicy(attempts=1)) as tokens:
        idp.add_client("signer", public_key=key.as_dict(private=False), key_certificate=pem)
        with_cert = PrivateKeyJWT(rsa_pem(key), certificate=pem)
        tokens.register(
            "entra", ClientCredentials(token_url=idp.token_url, client_id="signer", auth=with_cert)
        )
        tokens.register(
            "bare",
            ClientCredentials(
                token_url=idp.token_url, client_id="signer", auth=PrivateKeyJWT(rsa_pem(key))
            ),
        )
        assert (await tokens.get_token("entra")).access_token
        with pytest.raises(TokenRequestRefused) as refused:
            await tokens.get_token("bare")
        assert refused.value.error == "invalid_client"


# -- certificate-bound access tokens (RFC 8705 section 3) -----------------------------


async def test_client_presents_the_certificate_a_bound_token_needs(tmp_path):
    """tokens.client() of a MutualTLS tenant presents its certificate to the API, which
    accepts the bound token; the same token over a connection without it is refused."""
    pki = PKI(tmp_path)
    server = pki.server_context(ssl.CERT_OPTIONAL)
    async with IdentityProvider(tls=server) as idp, TokenManager() as tokens:
        idp.add_client("acme", tls_subject=pki.subjects["acme"])
        auth = MutualTLS(pki.files["acme"], ca=str(pki.ca_file))
        tokens.register(
            "t", ClientCredentials(token_url=idp.token_url, client_id="acme", auth=auth)
        )
        async with tokens.client("t") as bound:
            assert (await bound.get(idp.resource_url)).status_code == 200
        verify = ssl.create_default_context(cafile=str(pki.ca_file))
        async with httpx.AsyncClient(verify=verify, auth=tokens.auth("t")) as anonymous:
            assert (await anonymous.get(idp.resource_url)).status_code == 401
        assert idp.resource_rejections >= 1


# -- discovery metadata expires ------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, DEFAULT_METADATA_TTL),
        ("public, max-age=600", 600.0),
        ('max-age="120"', 120.0),
        ("max-age=0", MIN_METADATA_TTL),
        ("no-store", MIN_METADATA_TTL),
        ("max-age=99999999999", MAX_METADATA_TTL),
        ("s-maxage=5, private", DEFAULT_METADATA_TTL),
        ("max-age=" + "9" * 5000, MAX_METADATA_TTL),
    ],
)
def test_metadata_lifetime_follows_cache_control_within_bounds(header, ttl):
    """max-age is honoured between a minute and a day; no-store is the minimum; else 1 h."""
    assert metadata_ttl(header) == ttl


async def test_metadata_is_fetched_again_once_it_expires():
    """Metadata is served from the cache until its max-age passes, then fetched once more."""
    now = [0.0]
    async with IdentityProvider() as idp, httpx.AsyncClient() as http:
        idp.metadata_headers.append(("Cache-Control", "max-age=300"))
        async with anyio.create_task_group() as tg:
            discovery = Discovery(http, tg, RetryPolicy(), lambda: now[0])
            first, expires_at = await discovery.metadata(idp.url, allow_http=True)
            assert (idp.metadata_requests, expires_at) == (1, 300.0)
            now[0] = 299.0
            assert (await discovery.metadata(idp.url, allow_http=True))[0] is first
            assert idp.metadata_requests == 1
            now[0] = 300.0
            await discovery.metadata(idp.url, allow_http=True)
            assert idp.metadata_requests == 2


async def test_a_slot_discovers_again_after_the_metadata_expires():
    """A discovered tenant keeps its endpoint while the metadata is fresh (as long as its
    max-age) and asks the issuer again for its next token once it has expired."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme", "acme-secret")
        idp.metadata_headers.append(("Cache-Control", "max-age=900"))
        creds = ClientCredentials(
            issuer=idp.url, client_id="acme", auth=ClientSecret("acme-secret")
        )
        tokens.register("t", creds)
        await tokens.get_token("t")
        slot = tokens._table.find("t", None, None, None)
        assert slot is not None
        assert 800 < slot.discovered_until - anyio.current_time() <= 900
        tokens.invalidate("t")
        await tokens.get_token("t")  # a new token, the metadata still fresh
        assert (idp.metadata_requests, idp.token_requests) == (1, 2)
        # As when 900 s have passed: the slot's discovery and the cached metadata expire.
        now = anyio.current_time()
        slot.discovered_until = now
        discovery = tokens._discovery
        assert discovery is not None
        metadata, _ = discovery._cache[idp.url]
        discovery._cache[idp.url] = (metadata, now)
        tokens.invalidate("t")
        await tokens.get_token("t")
        assert (idp.metadata_requests, idp.token_requests) == (2, 3)
