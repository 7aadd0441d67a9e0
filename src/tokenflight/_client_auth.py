"""Client authentication at the token endpoint: checking the configuration, then applying it.

Methods (RFC 6749 section 2.3.1, RFC 7523, OpenID Connect Core section 9):

- `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
- `client_secret_post`: `client_id` and `client_secret` in the form body.
- `client_secret_jwt`: an assertion signed with HS256 keyed by the client secret.
- `private_key_jwt`: an assertion signed with the client's private key (RS256/PS256/ES256).
- `auto`: Basic, then the form body once on `invalid_client` (the endpoint remembers).
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ._errors import ConfigurationError
from ._jwt import ASSERTION_TYPE, SigningKey, client_assertion, load_private_key, secret_key
from ._mtls import TLS_METHODS

if TYPE_CHECKING:
    from ._config import ClientCredentials

__all__ = ["apply_client_auth", "basic_authorization", "check_credentials", "choose_auth_method"]

logger = logging.getLogger("tokenflight")

_SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt", "auto")


def check_credentials(creds: ClientCredentials, check_url: Callable[..., None]) -> None:
    """Validate the endpoint and client-authentication fields (called by `__post_init__`).

    Fills in the default `auth_method` when it does not depend on discovery, and parses
    the signing key once.

    Raises:
        ConfigurationError: A field is missing, malformed or contradicts another.
    """
    if not isinstance(creds.client_id, str) or not creds.client_id:
        raise ConfigurationError("client_id must be a non-empty string")
    who = f"client {creds.client_id!r}"
    _check_endpoint(creds, check_url, who)
    method = _method(creds, who)
    _check_assertion_options(creds, who)
    object.__setattr__(creds, "auth_method", method)
    if creds.private_key is not None:
        signing = load_private_key(creds.private_key, key_id=creds.key_id, alg=creds.signing_alg)
        object.__setattr__(creds, "_signing_key", signing)
    elif method == "client_secret_jwt":
        assert creds.client_secret is not None  # checks alg, length and that joserfc is there:
        secret_key(creds.client_secret, key_id=creds.key_id, alg=creds.signing_alg)


def _check_endpoint(creds: ClientCredentials, check_url: Callable[..., None], who: str) -> None:
    for name in ("token_url", "issuer"):
        value = getattr(creds, name)
        if value is not None:
            if not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a string")
            check_url(name, value, allow_http=creds.allow_insecure_http)
    if creds.token_url is None and creds.issuer is None:
        raise ConfigurationError(f"{who}: set token_url, or issuer to discover it")
    if creds.issuer is not None and (urlsplit(creds.issuer).query or "#" in creds.issuer):
        raise ConfigurationError("issuer must not have a query or fragment (RFC 8414)")
    for name in ("client_cert", "client_key", "tls_ca_bundle"):
        value = getattr(creds, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{name} must be a file path")


def _method(creds: ClientCredentials, who: str) -> str | None:
    """The configured or default method (None: chosen by discovery), checked for fit."""
    from ._config import AUTH_METHODS

    method: str | None = creds.auth_method
    if method is not None and method not in AUTH_METHODS:
        raise ConfigurationError(
            f"auth_method {method!r} is not supported; use one of {AUTH_METHODS}"
        )
    secret, key, cert = creds.client_secret, creds.private_key, creds.client_cert
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigurationError(f"client_secret for {who} is empty or not a string")
    if method is None and (creds.token_url is not None or key is not None):
        likely = _likely_methods(creds)
        method = likely[0] if likely else "client_secret_basic"
    if method in TLS_METHODS and cert is None:
        raise ConfigurationError(f"{who}: {method} needs client_cert (a PEM file path)")
    if method == "private_key_jwt" and key is None:
        raise ConfigurationError(f"{who}: private_key_jwt needs private_key (PEM or JWK)")
    if method in _SECRET_METHODS and secret is None:
        raise ConfigurationError(f"client_secret for {who} is missing or empty")
    if method is None and secret is None and key is None and cert is None:
        raise ConfigurationError(f"{who}: give client_secret or private_key")
    if key is not None and method not in (None, "private_key_jwt"):
        raise ConfigurationError(f"{who}: private_key is only used with private_key_jwt")
    return method


def _check_assertion_options(creds: ClientCredentials, who: str) -> None:
    lifetime = creds.assertion_lifetime
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
        raise ConfigurationError("assertion_lifetime must be a number of seconds")
    if not math.isfinite(lifetime) or not 1 <= lifetime <= 3600:
        raise ConfigurationError("assertion_lifetime must be between 1 and 3600 seconds")
    audience = creds.assertion_audience
    if audience == "issuer" and creds.issuer is None:
        raise ConfigurationError(f"{who}: assertion_audience='issuer' needs issuer")
    if audience not in (None, "issuer") and (
        not isinstance(audience, str) or not urlsplit(audience).scheme
    ):
        raise ConfigurationError("assertion_audience must be 'issuer' or an absolute URL")
    if creds.key_id is not None and (not isinstance(creds.key_id, str) or not creds.key_id):
        raise ConfigurationError("key_id must be a non-empty string")


def _likely_methods(creds: ClientCredentials) -> tuple[str, ...]:
    """The methods the client's registration most likely allows, likeliest first.

    A private key means `private_key_jwt`; a secret means `client_secret_basic`, the
    registration default (RFC 7591 section 2), then `client_secret_post`, but never
    `client_secret_jwt` unasked: a server listing it says nothing of how this client was
    registered, and refuses a client registered for Basic (`invalid_client`). A client
    certificate means mutual TLS.
    """
    methods: tuple[str, ...] = ()
    if creds.private_key is not None:
        methods = ("private_key_jwt",)
    elif creds.client_secret is not None:
        methods = ("client_secret_basic", "client_secret_post")
    if creds.client_cert is not None:
        methods = (*methods, "tls_client_auth", "self_signed_tls_client_auth")
    return methods


def choose_auth_method(creds: ClientCredentials, supported: Collection[str] | None) -> str:
    """The likeliest method of this client's registration that the server supports.

    `supported` is the metadata's `token_endpoint_auth_methods_supported`; RFC 8414 says
    `client_secret_basic` when the server does not say.

    Raises:
        ConfigurationError: None of the server's methods fits the configuration.
    """
    offered = ("client_secret_basic",) if supported is None else tuple(supported)
    possible = _likely_methods(creds)
    for method in possible:
        if method in offered:
            return method
    hint = ""
    if creds.client_secret is not None and "client_secret_jwt" in offered:
        hint = "; set auth_method='client_secret_jwt' if the client is registered for it"
    raise ConfigurationError(
        f"the authorization server supports {sorted(offered)} for client authentication; "
        f"client {creds.client_id!r} is configured for {list(possible)}{hint}"
    )


def apply_client_auth(
    creds: ClientCredentials,
    method: str,
    token_url: str,
    form: dict[str, str | list[str]],
    headers: dict[str, str],
) -> None:
    """Add the client authentication of `method` to a token request's form or headers.

    A JWT method signs a new assertion each call, so every attempt gets a fresh `jti`.
    """
    secret = creds.client_secret
    if method == "client_secret_basic":
        assert secret is not None
        headers["Authorization"] = basic_authorization(creds.client_id, secret)
        return
    form["client_id"] = creds.client_id
    if method in TLS_METHODS:
        return  # the client certificate, in the TLS handshake, authenticates
    if method == "client_secret_post":
        assert secret is not None
        form["client_secret"] = secret
        return
    if method == "private_key_jwt":
        signing: SigningKey = creds._signing_key
    else:
        assert secret is not None
        signing = secret_key(secret, key_id=creds.key_id, alg=creds.signing_alg)
    form["client_assertion_type"] = ASSERTION_TYPE
    form["client_assertion"] = client_assertion(
        signing,
        client_id=creds.client_id,
        audience=assertion_audience(creds, token_url),
        lifetime=creds.assertion_lifetime,
    )


def assertion_audience(creds: ClientCredentials, token_url: str) -> str:
    """The `aud` of the client's assertions."""
    audience = creds.assertion_audience
    if audience is None:
        return token_url
    if audience == "issuer":
        assert creds.issuer is not None
        return creds.issuer
    return audience


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The `Authorization` value for `client_secret_basic` (RFC 6749 section 2.3.1).

    Both parts are form-urlencoded before base64, so a secret holding `:`, `+`, `%`, a
    space or non-ASCII characters reaches a compliant server intact.
    """
    # RFC 6749 section 2.3.1 has id and secret encoded "using the
    # application/x-www-form-urlencoded encoding algorithm per Appendix B", whose encoder
    # writes a space as "+". Servers decode the header two ways: with a form decoder ("+"
    # is a space; oidc-provider, our bundled IdP) or with a plain percent-decoder (RFC 3986
    # section 2.1; "+" stays "+"; Authlib). So we percent-encode every octet of the UTF-8
    # form except the unreserved characters (RFC 3986 section 2.3), a space as "%20": a
    # valid form encoding, which both decoders turn back into the same string.
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")
