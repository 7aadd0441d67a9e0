"""Configuration values: validation, secrets kept out of repr/str, error hierarchy."""

from __future__ import annotations

import dataclasses

import pytest

from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    ConfigurationError,
    RefreshPolicy,
    RetryPolicy,
    TenantResolutionError,
    Token,
    TokenError,
    TokenManager,
    UnknownTenantError,
)

SECRET = "s3cret-value-never-shown"
URL = "https://idp.example/oauth/token"


def make(**kwargs) -> ClientCredentials:
    values: dict[str, object] = {
        "token_url": URL,
        "client_id": "acme",
        "auth": ClientSecretBasic(SECRET),
    }
    values.update(kwargs)
    return ClientCredentials(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "idp.example/token",
        "ftp://idp.example/token",
        "https:///token",
        "http://idp.example/token",
        "http://10.0.0.1/token",
        "https://user:pw@idp.example/token",
    ],
)
def test_bad_token_url_is_a_configuration_error(url):
    """Non-URLs, other schemes, credentials in the URL and remote plain http are refused."""
    with pytest.raises(ConfigurationError):
        make(token_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]/token"]
)
def test_plain_http_to_loopback_is_allowed(url):
    """Plain http is fine on loopback addresses."""
    assert make(token_url=url).token_url == url


def test_plain_http_allowed_on_request():
    """allow_insecure_http=True permits plain http to another host, and the message says how."""
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        make(token_url="http://idp.internal/token")
    assert make(token_url="http://idp.internal/token", allow_insecure_http=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth": None},
        {"auth": SECRET},
        {"auth": "client_secret_basic"},
        {"client_id": ""},
        {"extra_params": {"grant_type": "password"}},
        {"extra_params": {"client_secret": "x"}},
        {"extra_params": {"n": 1}},
        {"scopes": ("has space",)},
        {"scopes": ("",)},
        {"audience": ""},
        {"resource": "not-absolute"},
        {"resource": "https://api.example/#frag"},
    ],
)
def test_invalid_credentials_are_configuration_errors(kwargs):
    """A missing or non-value auth, reserved extra_params and bad scopes are refused."""
    with pytest.raises(ConfigurationError) as exc:
        make(**kwargs)
    assert SECRET not in str(exc.value)


@pytest.mark.parametrize(
    "method", [ClientSecretBasic, ClientSecretPost, ClientSecret, ClientSecretJWT]
)
@pytest.mark.parametrize("secret", ["", None])
def test_empty_secret_is_a_configuration_error(method, secret):
    """Each secret method refuses an empty or missing secret when the value is made."""
    with pytest.raises(ConfigurationError, match="the client secret is empty or not a string"):
        method(secret)


def test_credentials_normalise_values():
    """Scopes given as a string become a tuple; extra_params are copied into a plain dict."""
    extra = {"tenant_hint": "x"}
    creds = make(scopes="read write", extra_params=extra)
    assert creds.scopes == ("read", "write")
    extra["tenant_hint"] = "changed"
    assert creds.extra_params == {"tenant_hint": "x"}


def test_credentials_never_show_the_secret():
    """repr and str of ClientCredentials show the client id but never the secret."""
    creds = make(auth=ClientSecretPost(SECRET))
    for text in (repr(creds), str(creds)):
        assert SECRET not in text
        assert "acme" in text
    assert SECRET not in repr(creds.auth)
    assert SECRET not in repr(dataclasses.replace(creds, client_id="other"))


def test_credentials_are_frozen_and_hashable():
    """ClientCredentials is immutable, equal by value and hashable."""
    creds = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        creds.auth = ClientSecretBasic("x")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        creds.client_auth.secret = "x"  # type: ignore[attr-defined]
    assert creds == make()
    assert hash(creds) == hash(make())


def test_token_never_shows_the_access_token():
    """repr and str of Token hide the access token and extra fields."""
    token = Token(
        access_token="eyJ-very-secret-token",
        expires_in=60,
        obtained_at=0.0,
        expires_at=60.0,
        extra={"id_token": "also-secret"},
    )
    for text in (repr(token), str(token)):
        assert "very-secret" not in text
        assert "also-secret" not in text


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (RetryPolicy, {"attempts": 0}),
        (RetryPolicy, {"initial_wait": -1}),
        (RetryPolicy, {"total_timeout": 0}),
        (RetryPolicy, {"max_wait": float("nan")}),
        (RefreshPolicy, {"fraction": 0}),
        (RefreshPolicy, {"fraction": 1}),
        (RefreshPolicy, {"fraction": 0.5, "jitter": 0.5}),
        (RefreshPolicy, {"jitter": -0.1}),
        (RefreshPolicy, {"idle_timeout": 0}),
        (RefreshPolicy, {"leeway": -1}),
        (RefreshPolicy, {"max_concurrent": 0}),
        (RefreshPolicy, {"max_lifetime": float("inf")}),
    ],
)
def test_invalid_policies(cls, kwargs):
    """Policies refuse out-of-range values with ConfigurationError."""
    with pytest.raises(ConfigurationError):
        cls(**kwargs)


def test_policies_scale():
    """Cooldowns double up to the cap; short tokens get a proportional leeway."""
    retry = RetryPolicy(cooldown=1, permanent_cooldown=10, max_cooldown=8)
    assert [retry.cooldown_for(n, permanent=False) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert retry.cooldown_for(1, permanent=True) == 8
    refresh = RefreshPolicy(leeway=10)
    assert refresh.leeway_for(3600) == 10
    assert refresh.leeway_for(3) == pytest.approx(0.3)


def test_manager_arguments_are_checked():
    """TokenManager and register refuse bad arguments with ConfigurationError."""
    with pytest.raises(ConfigurationError):
        TokenManager(max_concurrent_fetches=0)
    with pytest.raises(ConfigurationError):
        TokenManager(store=object())  # type: ignore[arg-type]
    tokens = TokenManager()
    with pytest.raises(ConfigurationError):
        tokens.register("", make())
    with pytest.raises(ConfigurationError):
        tokens.register("acme", {"token_url": URL})  # type: ignore[arg-type]
    assert "stopped" in repr(tokens)


def test_error_hierarchy():
    """Configuration errors share the TokenError base; unknown tenants are also LookupErrors."""
    assert issubclass(ConfigurationError, TokenError)
    assert issubclass(UnknownTenantError, ConfigurationError)
    assert issubclass(UnknownTenantError, LookupError)
    assert issubclass(TenantResolutionError, ConfigurationError)
    assert not issubclass(TenantResolutionError, LookupError)


@pytest.mark.parametrize("secret", ["a b", "a+b", "%20 %2B", " :+%~*'()!ü "])
def test_basic_header_decodes_alike_with_form_and_percent_decoders(secret):
    """The Basic header's id and secret read back the same by unquote_plus and unquote."""
    import base64
    from urllib.parse import unquote, unquote_plus

    from tokenflight._client_auth import basic_authorization

    encoded = base64.b64decode(basic_authorization("id: 1+", secret).split()[1]).decode()
    client_id, _, encoded_secret = encoded.partition(":")
    for decode in (unquote_plus, unquote):
        assert (decode(client_id), decode(encoded_secret)) == ("id: 1+", secret)
