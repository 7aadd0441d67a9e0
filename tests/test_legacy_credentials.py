"""The deprecated keyword form of ClientCredentials (this release only): what `auth=` it means.

`client_secret`, `auth_method`, `private_key`, `key_id`, `signing_alg`, `assertion_audience`,
`assertion_lifetime`, `client_cert`, `client_key` and `tls_ca_bundle` still work, with a
DeprecationWarning, and stand for one client-authentication value, derived afresh on every
construction (so `dataclasses.replace` switches methods; issue 12).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from tokenflight import (
    ClientAuth,
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    ConfigurationError,
    MutualTLS,
    PrivateKeyJWT,
    SelfSignedMutualTLS,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

URL = "https://idp.example/token"
ISSUER = "https://idp.example"
SECRET = "s3cret"
LONG_SECRET = "a-client-secret-of-more-than-32-bytes!"
DEPRECATED = r"is deprecated and will be removed in the next release: use auth="


@functools.cache
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)


@functools.cache
def pem() -> str:
    return rsa_key().as_pem(private=True).decode()


def legacy(**kwargs: Any) -> ClientCredentials:
    """Credentials in the deprecated keyword form, which must warn."""
    kwargs.setdefault("client_id", "acme")
    if "issuer" not in kwargs:
        kwargs.setdefault("token_url", URL)
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        return ClientCredentials(**kwargs)


# (keywords, the value they stand for), one case per method and defaulting rule.
CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "secret-alone": ({"client_secret": SECRET}, lambda: ClientSecretBasic(SECRET)),
    "basic": (
        {"client_secret": SECRET, "auth_method": "client_secret_basic"},
        lambda: ClientSecretBasic(SECRET),
    ),
    "post": (
        {"client_secret": SECRET, "auth_method": "client_secret_post"},
        lambda: ClientSecretPost(SECRET),
    ),
    "auto": ({"client_secret": SECRET, "auth_method": "auto"}, lambda: ClientSecret(SECRET)),
    "secret-with-issuer": (
        {"client_secret": SECRET, "issuer": ISSUER},
        lambda: ClientSecret(SECRET),
    ),
    "client_secret_jwt": (
        {
            "client_secret": LONG_SECRET,
            "auth_method": "client_secret_jwt",
            "key_id": "k1",
            "assertion_audience": "https://aud.example/token",
            "assertion_lifetime": 30,
        },
        lambda: ClientSecretJWT(
            LONG_SECRET, key_id="k1", audience="https://aud.example/token", lifetime=30
        ),
    ),
    "private_key_jwt": (
        {
            "private_key": "PEM",
            "auth_method": "private_key_jwt",
            "key_id": "k2",
            "signing_alg": "PS256",
            "assertion_audience": "issuer",
            "assertion_lifetime": 120,
            "issuer": ISSUER,
        },
        lambda: PrivateKeyJWT(pem(), key_id="k2", alg="PS256", audience="issuer", lifetime=120),
    ),
    "key-alone": ({"private_key": "PEM"}, lambda: PrivateKeyJWT(pem())),
    "tls_client_auth": (
        {
            "client_cert": "c.pem",
            "client_key": "k.pem",
            "tls_ca_bundle": "ca.pem",
            "auth_method": "tls_client_auth",
        },
        lambda: MutualTLS("c.pem", key="k.pem", ca="ca.pem"),
    ),
    "cert-alone": ({"client_cert": "c.pem"}, lambda: MutualTLS("c.pem")),
    "self_signed_tls_client_auth": (
        {
            "client_cert": "c.pem",
            "client_key": "k.pem",
            "tls_ca_bundle": "ca.pem",
            "auth_method": "self_signed_tls_client_auth",
        },
        lambda: SelfSignedMutualTLS("c.pem", key="k.pem", ca="ca.pem"),
    ),
}


@pytest.mark.parametrize(("keywords", "expected"), CASES.values(), ids=CASES.keys())
def test_keywords_stand_for_the_right_value(keywords, expected):
    """Each deprecated keyword combination warns and builds the equivalent auth value."""
    keywords = {k: pem() if v == "PEM" else v for k, v in keywords.items()}
    creds = legacy(**keywords)
    value = expected()
    assert type(creds.client_auth) is type(value)
    assert creds.client_auth == value
    assert creds.auth is None  # the user's own field is left as given


def test_the_warning_names_the_keywords_and_points_at_the_caller():
    """The DeprecationWarning lists the keywords given, names the value to use instead, and
    is attributed to the caller's line."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED) as caught:
        ClientCredentials(
            token_url=URL, client_id="acme", client_secret=SECRET, auth_method="client_secret_post"
        )
    (warning,) = caught
    assert "ClientCredentials(client_secret=, auth_method=)" in str(warning.message)
    assert "use auth=ClientSecretPost(...)" in str(warning.message)
    assert warning.filename == __file__


@pytest.mark.parametrize(
    ("keywords", "method", "register"),
    [
        ({"client_secret": SECRET}, "client_secret_basic", {"secret": SECRET}),
        (
            {"client_secret": SECRET, "auth_method": "client_secret_post"},
            "client_secret_post",
            {"secret": SECRET},
        ),
        (
            {"client_secret": SECRET, "auth_method": "auto"},
            "client_secret_basic",
            {"secret": SECRET},
        ),
        (
            {"client_secret": LONG_SECRET, "auth_method": "client_secret_jwt"},
            "client_secret_jwt",
            {"secret": LONG_SECRET},
        ),
        ({"private_key": "PEM"}, "private_key_jwt", {"public_key": "JWK"}),
    ],
    ids=["basic", "post", "auto", "client_secret_jwt", "private_key_jwt"],
)
async def test_keywords_still_get_a_token(keywords, method, register):
    """Credentials in the deprecated form get a token from the IdP with the method they say."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        if register.get("public_key") == "JWK":
            idp.add_client("acme", public_key=rsa_key().as_dict(private=False))
        else:
            idp.add_client("acme", register["secret"])
        keywords = {k: pem() if v == "PEM" else v for k, v in keywords.items()}
        tokens.register("t", legacy(token_url=idp.token_url, **keywords))
        assert (await tokens.get_token("t")).access_token
        assert [(r.auth_method, r.status) for r in idp.requests] == [(method, 200)]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"auth_method": "private_key_jwt"}, "private_key_jwt needs private_key"),
        (
            {"private_key": "PEM", "client_secret": SECRET, "auth_method": "client_secret_basic"},
            "private_key is only used with private_key_jwt",
        ),
        ({"client_secret": SECRET, "auth_method": "basic"}, "auth_method 'basic' is not supported"),
        ({"client_secret": ""}, "client_secret for client 'acme' is empty"),
        ({"auth_method": "client_secret_post"}, "client_secret for client 'acme' is missing"),
        ({"auth_method": "tls_client_auth"}, "tls_client_auth needs client_cert"),
        (
            {"client_secret": SECRET, "client_cert": "c.pem", "auth_method": "client_secret_basic"},
            "client_cert is only used with mutual TLS",
        ),
        ({"key_id": "k1"}, "give client_secret or private_key"),
        (
            {"client_secret": "short", "auth_method": "client_secret_jwt"},
            "at least 32 bytes",
        ),
        ({"private_key": "PEM", "assertion_lifetime": 0}, "between 1 and 3600"),
        ({"private_key": "PEM", "assertion_audience": "issuer"}, "needs the credentials' issuer"),
    ],
    ids=[
        "key-missing",
        "key-with-basic",
        "unknown-method",
        "empty-secret",
        "secret-missing",
        "cert-missing",
        "cert-with-basic",
        "nothing-to-sign-with",
        "short-hmac-secret",
        "lifetime",
        "audience-issuer",
    ],
)
def test_keyword_mistakes_are_configuration_errors(keywords, message):
    """Missing or contradicting deprecated keywords still raise a clear ConfigurationError."""
    keywords = {k: pem() if v == "PEM" else v for k, v in keywords.items()}
    with (
        pytest.warns(DeprecationWarning, match=DEPRECATED),
        pytest.raises(ConfigurationError, match=message),
    ):
        ClientCredentials(token_url=URL, client_id="acme", **keywords)


@pytest.mark.parametrize(
    "keywords",
    [
        {"client_secret": SECRET},
        {"auth_method": "client_secret_post"},
        {"private_key": "PEM"},
        {"key_id": "k1"},
        {"assertion_lifetime": 30},
        {"client_cert": "c.pem"},
        {"tls_ca_bundle": "ca.pem"},
    ],
    ids=lambda keywords: next(iter(keywords)),
)
def test_auth_and_a_deprecated_keyword_is_a_configuration_error(keywords):
    """auth= together with any deprecated keyword is refused, naming the keyword."""
    keywords = {k: pem() if v == "PEM" else v for k, v in keywords.items()}
    (name,) = keywords
    with pytest.raises(ConfigurationError, match=f"give auth= or the deprecated {name}, not both"):
        ClientCredentials(
            token_url=URL, client_id="acme", auth=ClientSecretBasic(SECRET), **keywords
        )


def test_replace_switches_a_secret_to_mutual_tls():
    """Issue 12: replace() clearing client_secret and setting client_cert gives MutualTLS."""
    creds = legacy(token_url=URL, client_id="a", client_secret=SECRET)
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        switched = dataclasses.replace(creds, client_secret=None, client_cert="c.pem")
    assert switched.client_auth == MutualTLS("c.pem")
    assert type(switched.client_auth) is MutualTLS
    assert creds.client_auth == ClientSecretBasic(SECRET)


def test_replace_derives_the_method_afresh():
    """replace() of a deprecated-form field recomputes the auth value from the new fields."""
    creds = legacy(client_secret=SECRET)
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        post = dataclasses.replace(creds, auth_method="client_secret_post")
    assert post.client_auth == ClientSecretPost(SECRET)
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        rotated = dataclasses.replace(post, client_secret="rotated")
    assert rotated.client_auth == ClientSecretPost("rotated")
    assert creds.client_auth == ClientSecretBasic(SECRET)


def test_replace_with_a_new_auth_value():
    """replace(creds, auth=MutualTLS(...)) switches methods, warns nothing, leaves the original."""
    creds = ClientCredentials(token_url=URL, client_id="a", auth=ClientSecretBasic(SECRET))
    switched = dataclasses.replace(creds, auth=MutualTLS("c.pem"))
    assert switched.client_auth == MutualTLS("c.pem")
    assert switched.client_auth.tls == ("c.pem", None, None)
    assert creds.client_auth == ClientSecretBasic(SECRET)
    assert creds.auth == ClientSecretBasic(SECRET)


def test_replace_auth_on_deprecated_credentials_needs_the_keywords_cleared():
    """Giving auth= to credentials made with keywords is 'not both' until they are cleared."""
    creds = legacy(client_secret=SECRET)
    with pytest.raises(ConfigurationError, match="not both"):
        dataclasses.replace(creds, auth=MutualTLS("c.pem"))
    switched = dataclasses.replace(creds, auth=MutualTLS("c.pem"), client_secret=None)
    assert switched.client_auth == MutualTLS("c.pem")


def test_auto_reports_auto_as_its_method():
    """auth_method='auto' stands for ClientSecret, whose method reads 'auto'."""
    auth: ClientAuth = legacy(client_secret=SECRET, auth_method="auto").client_auth
    assert isinstance(auth, ClientSecret)
    assert auth.method == "auto"
