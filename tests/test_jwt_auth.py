"""private_key_jwt and client_secret_jwt (RFC 7523) end to end against the bundled IdP."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tokenflight import (
    ClientAuth,
    ClientCredentials,
    ClientSecretBasic,
    ClientSecretJWT,
    ConfigurationError,
    PrivateKeyJWT,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight._endpoint import TokenRequest, build_form
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LONG_SECRET = "a-client-secret-of-more-than-32-bytes!"
NO_SCOPE = TokenRequest(scopes=(), audience=None, resource=None)


@functools.cache
def rsa_key(kid: str = "rsa-1") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


@functools.cache
def ec_key(kid: str = "ec-1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def pem(key: RSAKey | ECKey) -> str:
    return key.as_pem(private=True).decode()


def claims_of(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWS, without checking the signature."""
    head, body, _ = assertion.split(".")
    from joserfc.util import urlsafe_b64decode

    return json.loads(urlsafe_b64decode(head.encode())), json.loads(
        urlsafe_b64decode(body.encode())
    )


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to a real transport and keeps their form bodies."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.forms: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from urllib.parse import parse_qsl

        self.forms.append(dict(parse_qsl((await request.aread()).decode())))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# Not conftest's idp: clients "signer" (an RSA public key) and "hmac" (a long secret).
@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider() as server:
        server.add_client("signer", public_key=rsa_key().as_dict(private=False))
        server.add_client("hmac", LONG_SECRET)
        yield server


def signer(key: str | dict[str, Any] | None = None, **options: Any) -> PrivateKeyJWT:
    """`PrivateKeyJWT` with the registered RSA key unless another is given."""
    return PrivateKeyJWT(pem(rsa_key()) if key is None else key, **options)


def key_creds(
    idp: IdentityProvider, auth: ClientAuth | None = None, **kwargs: Any
) -> ClientCredentials:
    auth = signer() if auth is None else auth
    return ClientCredentials(token_url=idp.token_url, client_id="signer", auth=auth, **kwargs)


async def fetch(creds: ClientCredentials, **manager: Any) -> str:
    async with TokenManager(**manager) as tokens:
        tokens.register("t", creds)
        return (await tokens.get_token("t")).access_token


async def refused(creds: ClientCredentials, **manager: Any) -> TokenRequestRefused:
    """The refusal that getting a token with these credentials raises."""
    async with TokenManager(**manager) as tokens:
        tokens.register("t", creds)
        with pytest.raises(TokenRequestRefused) as caught:
            await tokens.get_token("t")
        return caught.value


async def post(idp: IdentityProvider, assertion: str, client_id: str = "signer") -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    async with httpx.AsyncClient() as http:
        return await http.post(idp.token_url, data=form)


def assertion(key: Any, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    jti = f"j{time.perf_counter_ns()}"
    claims: dict[str, Any] = {"iss": "signer", "sub": "signer", "aud": "", "jti": jti}
    claims |= {"iat": now, "exp": now + 60}
    claims |= overrides
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


# -- end to end ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "make_key", "as_jwk"),
    [
        ("RS256", rsa_key, False),
        ("PS256", rsa_key, True),
        ("ES256", ec_key, False),
        ("ES256", ec_key, True),
    ],
)
async def test_private_key_jwt_gets_a_token(idp, alg, make_key, as_jwk):
    """A private_key_jwt assertion (PEM or JWK key, RS256/PS256/ES256) is accepted by the IdP."""
    key = make_key()
    idp.add_client("signer", public_key=key.as_dict(private=False))
    private = key.as_dict(private=True) if as_jwk else pem(key)
    assert await fetch(key_creds(idp, signer(private, alg=alg)))
    (record,) = idp.requests
    assert (record.status, record.auth_method) == (200, "private_key_jwt")
    assert "client_assertion" not in record.form
    assert record.form["client_assertion_type"] == ASSERTION_TYPE


async def test_client_secret_jwt_gets_a_token(idp):
    """client_secret_jwt signs with HS256 keyed by the secret; the secret itself is not sent."""
    recorder = Recorder()
    creds = ClientCredentials(
        token_url=idp.token_url,
        client_id="hmac",
        auth=ClientSecretJWT(LONG_SECRET),
    )
    async with httpx.AsyncClient(transport=recorder) as http:
        assert await fetch(creds, http_client=http)
    assert idp.requests[0].auth_method == "client_secret_jwt"
    (form,) = recorder.forms
    assert "client_secret" not in form
    assert LONG_SECRET not in json.dumps(form)
    header, _ = claims_of(form["client_assertion"])
    assert header["alg"] == "HS256"


async def test_assertion_claims(idp):
    """The assertion has iss = sub = client id, aud = token URL, kid, a jti and a 60 s exp."""
    form, headers = build_form(key_creds(idp, signer(key_id="my-kid")), NO_SCOPE)
    assert "Authorization" not in headers
    assert form["client_id"] == "signer"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    header, claims = claims_of(str(form["client_assertion"]))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "my-kid"}
    assert claims["iss"] == claims["sub"] == "signer"
    assert claims["aud"] == idp.token_url
    assert claims["exp"] - claims["iat"] == 60
    assert abs(claims["iat"] - time.time()) < 5
    other, _ = build_form(key_creds(idp), NO_SCOPE)
    assert claims_of(str(other["client_assertion"]))[1]["jti"] != claims["jti"]


async def test_kid_from_jwk_and_jwks_selection(idp):
    """A JWK's own kid is sent, and the IdP picks the right key of a registered JWKS."""
    keys = KeySet([rsa_key("other"), rsa_key()])
    idp.add_client("signer", public_key=keys.as_dict(private=False))
    creds = key_creds(idp, signer(rsa_key().as_dict(private=True)))
    form, _ = build_form(creds, NO_SCOPE)
    assert claims_of(str(form["client_assertion"]))[0]["kid"] == "rsa-1"
    assert await fetch(creds)


async def test_assertion_audience_issuer(idp):
    """audience='issuer' puts the issuer in aud, which the IdP accepts too."""
    creds = key_creds(idp, signer(audience="issuer"), issuer=idp.url)
    form, _ = build_form(creds, NO_SCOPE)
    assert claims_of(str(form["client_assertion"]))[1]["aud"] == idp.url
    assert await fetch(creds)


async def test_each_retry_signs_a_fresh_assertion(idp, no_retry_wait):
    """A retried request carries a new assertion with a new jti."""
    from tokenflight.testing import Fault

    idp.inject(Fault(status=503))
    recorder = Recorder()
    async with httpx.AsyncClient(transport=recorder) as http:
        assert await fetch(key_creds(idp), http_client=http)
    jtis = [claims_of(f["client_assertion"])[1]["jti"] for f in recorder.forms]
    assert len(jtis) == 2
    assert jtis[0] != jtis[1]


# -- refusals --------------------------------------------------------------------------


async def test_wrong_key_is_invalid_client(idp):
    """An assertion signed with a key the IdP does not know answers invalid_client."""
    error = await refused(key_creds(idp, signer(pem(rsa_key("intruder")), key_id="rsa-1")))
    assert (error.error, error.status_code) == ("invalid_client", 401)


async def test_wrong_secret_for_client_secret_jwt_is_invalid_client(idp):
    """A client_secret_jwt assertion keyed by another secret answers invalid_client."""
    creds = ClientCredentials(
        token_url=idp.token_url,
        client_id="hmac",
        auth=ClientSecretJWT("x" * 40),
    )
    assert (await refused(creds)).error == "invalid_client"


async def test_wrong_audience_is_invalid_client(idp):
    """An assertion for another audience answers invalid_client."""
    error = await refused(key_creds(idp, signer(audience="https://elsewhere.example/token")))
    assert error.error == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120, "iat": int(time.time()) - 180},
        {"iss": "someone-else"},
        {"sub": "someone-else"},
        {"jti": ""},
    ],
    ids=["expired", "iss", "sub", "no-jti"],
)
async def test_bad_claims_are_invalid_client(idp, claims):
    """Expired assertions, a wrong iss or sub and a missing jti answer 401 invalid_client."""
    response = await post(idp, assertion(rsa_key(), aud=idp.token_url, **claims))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_replayed_jti_is_invalid_client(idp):
    """The same assertion sent twice is refused the second time (jti replay)."""
    signed = assertion(rsa_key(), aud=idp.token_url)
    assert (await post(idp, signed)).status_code == 200
    replay = await post(idp, signed)
    assert replay.status_code == 401
    assert "replay" in replay.json()["error_description"]


async def test_alg_none_and_secret_plus_assertion_are_refused(idp):
    """An unsigned (alg none) assertion is invalid_client; assertion plus secret is 400."""
    head = "eyJhbGciOiJub25lIn0"
    _, body, _ = assertion(rsa_key(), aud=idp.token_url).split(".")
    assert (await post(idp, f"{head}.{body}.")).status_code == 401
    form = {
        "grant_type": "client_credentials",
        "client_id": "hmac",
        "client_secret": LONG_SECRET,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(rsa_key(), aud=idp.token_url),
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(idp.token_url, data=form)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# -- configuration ---------------------------------------------------------------------

URL = "https://idp.example/token"


def public_pem() -> str:
    return rsa_key().as_pem(private=False).decode()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: None, "set auth="),
        (lambda: PrivateKeyJWT(None), "must be a PEM string or a JWK dict"),  # type: ignore[arg-type]
        (lambda: signer("not a key"), "could not be read"),
        (lambda: signer(public_pem()), "public key"),
        (lambda: signer(alg="ES256"), "does not fit"),
        (lambda: signer(alg="HS256"), "does not fit"),
        (lambda: ClientSecretJWT("short"), "at least 32 bytes"),
        (lambda: ClientSecretJWT(LONG_SECRET, alg="RS256"), "signs with HS256"),
        (lambda: signer(audience="issuer"), "needs the credentials' issuer"),
        (lambda: ClientSecretJWT(LONG_SECRET, audience="issuer"), "needs the credentials' issuer"),
        (lambda: signer(audience="elsewhere"), "'issuer' or an absolute URL"),
        (lambda: signer(lifetime=0), "between 1 and 3600"),
        (lambda: ClientSecretJWT(LONG_SECRET, lifetime=3601), "between 1 and 3600"),
        (lambda: signer(key_id=""), "key_id must be a non-empty string"),
    ],
    ids=[
        "no-auth",
        "no-key",
        "unreadable",
        "public",
        "rsa-es256",
        "rsa-hs256",
        "short-secret",
        "hmac-rs256",
        "key-aud-issuer",
        "hmac-aud-issuer",
        "aud-not-url",
        "lifetime-0",
        "lifetime-3601",
        "empty-kid",
    ],
)
def test_configuration_errors(make, message):
    """Missing, unreadable or mismatched keys and options raise a clear ConfigurationError."""
    with pytest.raises(ConfigurationError, match=message):
        ClientCredentials(token_url=URL, client_id="c", auth=make())


def test_issuer_without_credentials_is_refused():
    """Discovery without client authentication raises a ConfigurationError at once."""
    with pytest.raises(ConfigurationError, match="set auth="):
        ClientCredentials(issuer="https://idp.example", client_id="c")
    with pytest.raises(ConfigurationError, match="set token_url, or issuer"):
        ClientCredentials(client_id="c", auth=ClientSecretBasic("s"))


def test_client_auth_is_the_value_given():
    """client_auth is the auth= value itself, and its method is the RFC name."""
    key = signer()
    keyed = ClientCredentials(token_url=URL, client_id="c", auth=key)
    assert keyed.client_auth is key
    assert keyed.client_auth.method == "private_key_jwt"
    hmac = ClientCredentials(token_url=URL, client_id="c", auth=ClientSecretJWT(LONG_SECRET))
    assert hmac.client_auth.method == "client_secret_jwt"


def test_private_key_is_never_shown():
    """Neither repr nor str of the credentials show the private key or the secret."""
    key = rsa_key().as_dict(private=True)
    creds = ClientCredentials(token_url=URL, client_id="c", auth=PrivateKeyJWT(key))
    text = repr(creds) + str(creds)
    private = key["d"]
    assert isinstance(private, str)
    assert private not in text
    assert "PRIVATE" not in text
    secret = ClientCredentials(
        token_url=URL,
        client_id="c",
        auth=ClientSecretJWT(LONG_SECRET),
    )
    assert LONG_SECRET not in repr(secret)


async def test_refusal_message_holds_no_assertion(idp):
    """The refusal raised for a bad assertion does not carry the assertion."""
    recorder = Recorder()
    async with httpx.AsyncClient(transport=recorder) as http:
        error = await refused(key_creds(idp, signer(pem(rsa_key("x")))), http_client=http)
    sent = recorder.forms[0]["client_assertion"]
    for part in sent.split("."):
        assert part not in str(error)
        assert part not in repr(error.__dict__)


def test_missing_joserfc_says_which_extra(monkeypatch):
    """Without joserfc, a JWT method raises ConfigurationError naming tokenflight[jwt]."""
    monkeypatch.setitem(sys.modules, "joserfc", None)
    monkeypatch.setitem(sys.modules, "joserfc.jwt", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'tokenflight\[jwt\]'"):
        ClientCredentials(token_url=URL, client_id="c", auth=PrivateKeyJWT("-----BEGIN"))
