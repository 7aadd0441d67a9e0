"""Client authentication at the token endpoint: one value per method, each applying itself.

The vocabulary (RFC 6749 section 2.3.1, RFC 7523, RFC 8705, OpenID Connect Core section 9):

- `ClientSecretBasic(secret)`: HTTP Basic with the form-urlencoded id and secret.
- `ClientSecretPost(secret)`: `client_id` and `client_secret` in the form body.
- `ClientSecret(secret)`: a secret whose method is chosen for it: what the server's
  discovered metadata says (Basic when listed or when it does not say, else the form
  body), or Basic and then the form body once on `invalid_client`.
- `ClientSecretJWT(secret)`: an assertion signed with HS256 keyed by the secret.
- `PrivateKeyJWT(key)`: an assertion signed with the client's private key.
- `MutualTLS(cert)` / `SelfSignedMutualTLS(cert)`: the client certificate, in the TLS
  handshake, is the proof (`tls_client_auth` / `self_signed_tls_client_auth`).

This module also owns the preference order: which method discovery picks (`choose`)
and which a negotiated secret tries (`candidates`).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Collection, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, Literal, final, get_args
from urllib.parse import quote, urlsplit

from ._errors import ConfigurationError
from ._jwt import (
    ASSERTION_TYPE,
    SigningKey,
    certificate_thumbprint,
    client_assertion,
    load_private_key,
    secret_key,
)

__all__ = [
    "AUTH_METHODS",
    "SECRET_METHODS",
    "AuthMethod",
    "ClientAuth",
    "ClientSecret",
    "ClientSecretBasic",
    "ClientSecretJWT",
    "ClientSecretPost",
    "MutualTLS",
    "PrivateKeyJWT",
    "SelfSignedMutualTLS",
    "TLSIdentity",
    "auth_for",
    "basic_authorization",
    "candidates",
    "choose",
    "implied_method",
]

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "auto",
]
AUTH_METHODS: tuple[str, ...] = get_args(AuthMethod)

#: The form a request's fields and headers take while client authentication fills them.
Form = dict[str, str | list[str]]

Headers = dict[str, str]

#: (certificate file, key file, CA bundle file): what a mutual-TLS pool presents.
TLSIdentity = tuple[str, str | None, str | None]


class ClientAuth:
    """How a client proves who it is at the token endpoint (one subclass per method).

    Values are frozen and check themselves when made; `apply` adds the proof to one
    token request. Secrets and keys never appear in a `repr`.
    """

    __slots__ = ()

    #: The RFC name of the method (`token_endpoint_auth_method`).
    method: ClassVar[str]

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        """Add this method's proof to a token request's form fields or headers."""
        raise NotImplementedError

    @property
    def tls(self) -> TLSIdentity | None:
        """The client certificate this method presents in the TLS handshake, if any."""
        return None

    def check(self, *, issuer: str | None) -> None:
        """Check what depends on the rest of the credentials (overridden where needed)."""


def _check_secret(secret: object, what: str) -> None:
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError(f"{what}: the client secret is empty or not a string")


def _check_file(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{name} must be a file path")


@dataclass(frozen=True, slots=True)
class _SecretAuth(ClientAuth):
    """A method that sends the client secret itself (checked when made)."""

    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_secret(self.secret, type(self).__name__)


@final
@dataclass(frozen=True, slots=True)
class ClientSecretBasic(_SecretAuth):
    """`client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.

    Args:
        secret: The client secret. Never shown.
    """

    method: ClassVar[str] = "client_secret_basic"

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        headers["Authorization"] = basic_authorization(client_id, self.secret)


@final
@dataclass(frozen=True, slots=True)
class ClientSecretPost(_SecretAuth):
    """`client_secret_post`: `client_id` and `client_secret` in the form body.

    Args:
        secret: The client secret. Never shown.
    """

    method: ClassVar[str] = "client_secret_post"

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        form["client_id"] = client_id
        form["client_secret"] = self.secret


@final
@dataclass(frozen=True, slots=True)
class ClientSecret(_SecretAuth):
    """A client secret whose method tokenflight chooses.

    With an `issuer`, the discovered metadata decides: `client_secret_basic` when listed
    (or when the server does not say, RFC 8414 section 2), else `client_secret_post`.
    With a `token_url`, Basic is tried first and the form body once on `invalid_client`;
    what worked is remembered per token URL.

    Args:
        secret: The client secret. Never shown.
    """

    method: ClassVar[str] = "auto"

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        ClientSecretBasic(self.secret).apply(
            client_id=client_id, token_url=token_url, issuer=issuer, form=form, headers=headers
        )


def _check_assertion(audience: object, lifetime: object, key_id: object) -> None:
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
        raise ConfigurationError("the assertion lifetime must be a number of seconds")
    if not math.isfinite(lifetime) or not 1 <= lifetime <= 3600:
        raise ConfigurationError("the assertion lifetime must be between 1 and 3600 seconds")
    if audience not in (None, "issuer") and (
        not isinstance(audience, str) or not urlsplit(audience).scheme
    ):
        raise ConfigurationError("the assertion audience must be 'issuer' or an absolute URL")
    if key_id is not None and (not isinstance(key_id, str) or not key_id):
        raise ConfigurationError("key_id must be a non-empty string")


def _assertion_audience(audience: str | None, token_url: str, issuer: str | None) -> str:
    if audience is None:
        return token_url
    if audience == "issuer":
        assert issuer is not None  # checked with the credentials
        return issuer
    return audience


def _needs_issuer(audience: str | None, issuer: str | None, what: str) -> None:
    if audience == "issuer" and issuer is None:
        raise ConfigurationError(f"{what}(audience='issuer') needs the credentials' issuer")


@final
@dataclass(frozen=True, slots=True)
class ClientSecretJWT(ClientAuth):
    """`client_secret_jwt`: a short-lived assertion signed with HS256 keyed by the secret.

    Args:
        secret: The client secret, at least 32 bytes (RFC 7518 section 3.2). Never shown.
        alg: The signing algorithm; HS256.
        key_id: The assertion's `kid` header, if the server wants one.
        audience: The assertion's `aud`: the token endpoint by default, `"issuer"` for
            the issuer, or an explicit URL.
        lifetime: Seconds an assertion is valid (`exp - iat`).
    """

    secret: str = field(repr=False)
    _: KW_ONLY
    alg: str = "HS256"
    key_id: str | None = None
    audience: str | None = None
    lifetime: float = 60.0
    _key: SigningKey = field(init=False, repr=False, compare=False)
    method: ClassVar[str] = "client_secret_jwt"

    def __post_init__(self) -> None:
        _check_secret(self.secret, "ClientSecretJWT")
        _check_assertion(self.audience, self.lifetime, self.key_id)
        # Parsed once, here: every attempt signs with it.
        object.__setattr__(self, "_key", secret_key(self.secret, key_id=self.key_id, alg=self.alg))

    def check(self, *, issuer: str | None) -> None:
        _needs_issuer(self.audience, issuer, "ClientSecretJWT")

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        audience = _assertion_audience(self.audience, token_url, issuer)
        _add_assertion(form, self._key, client_id, audience, lifetime=self.lifetime)


@final
@dataclass(frozen=True, slots=True)
class PrivateKeyJWT(ClientAuth):
    """`private_key_jwt`: a short-lived assertion signed with the client's private key.

    Args:
        key: An RSA or EC (P-256) private key, as a PEM string or a JWK dict. Never shown.
        key_id: The assertion's `kid` header (default: the JWK's own `kid`, if any).
        alg: RS256, PS256 or ES256 (default: RS256 for RSA, ES256 for EC).
        audience: The assertion's `aud`: the token endpoint by default, `"issuer"` for
            the issuer, or an explicit URL.
        lifetime: Seconds an assertion is valid (`exp - iat`).
        certificate: The key's X.509 certificate (PEM). Its SHA-256 thumbprint goes into
            the assertion's `x5t#S256` header, which Microsoft Entra ID requires for
            certificate credentials.
    """

    key: str | Mapping[str, Any] = field(repr=False)
    _: KW_ONLY
    key_id: str | None = None
    alg: str | None = None
    audience: str | None = None
    lifetime: float = 60.0
    certificate: str | None = None
    _key: SigningKey = field(init=False, repr=False, compare=False)
    method: ClassVar[str] = "private_key_jwt"

    def __post_init__(self) -> None:
        _check_assertion(self.audience, self.lifetime, self.key_id)
        signing = load_private_key(self.key, key_id=self.key_id, alg=self.alg)
        if self.certificate is not None:
            thumbprint = certificate_thumbprint(self.certificate, signing)
            signing = SigningKey(signing.key, signing.alg, signing.kid, thumbprint)
        object.__setattr__(self, "_key", signing)  # parsed once, here

    def __hash__(self) -> int:  # a JWK dict is not hashable
        return hash((self.key_id, self.alg, self.audience, self.certificate))

    def check(self, *, issuer: str | None) -> None:
        _needs_issuer(self.audience, issuer, "PrivateKeyJWT")

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        audience = _assertion_audience(self.audience, token_url, issuer)
        _add_assertion(form, self._key, client_id, audience, lifetime=self.lifetime)


def _add_assertion(
    form: Form, signing: SigningKey, client_id: str, audience: str, *, lifetime: float
) -> None:
    """A fresh assertion (new `jti`) for each attempt (RFC 7523 section 2.2)."""
    form["client_id"] = client_id
    form["client_assertion_type"] = ASSERTION_TYPE
    form["client_assertion"] = client_assertion(
        signing, client_id=client_id, audience=audience, lifetime=lifetime
    )


@dataclass(frozen=True, slots=True)
class _TLSMethod(ClientAuth):
    cert: str
    _: KW_ONLY
    key: str | None = None
    ca: str | None = None

    def __post_init__(self) -> None:
        if self.cert is None:
            raise ConfigurationError("cert must be a file path (the PEM client certificate)")
        _check_file("cert", self.cert)
        _check_file("key", self.key)
        _check_file("ca", self.ca)

    @property
    def tls(self) -> TLSIdentity:
        return (self.cert, self.key, self.ca)

    def apply(
        self, *, client_id: str, token_url: str, issuer: str | None, form: Form, headers: Headers
    ) -> None:
        form["client_id"] = client_id  # the certificate, in the TLS handshake, is the proof


@final
@dataclass(frozen=True, slots=True)
class MutualTLS(_TLSMethod):
    """`tls_client_auth` (RFC 8705 section 2.1): a certificate from a CA the server trusts.

    The same certificate is presented to resource servers by `TokenManager.client()`, as
    certificate-bound access tokens require (RFC 8705 section 3).

    Args:
        cert: Path of the PEM client certificate (chain).
        key: Path of its private key, if not in `cert`.
        ca: Path of the CA bundle that verifies the servers (default: the system's).
    """

    method: ClassVar[str] = "tls_client_auth"


@final
@dataclass(frozen=True, slots=True)
class SelfSignedMutualTLS(_TLSMethod):
    """`self_signed_tls_client_auth` (RFC 8705 section 2.2): a certificate registered
    with the server.

    Args:
        cert: Path of the PEM client certificate.
        key: Path of its private key, if not in `cert`.
        ca: Path of the CA bundle that verifies the servers (default: the system's).
    """

    method: ClassVar[str] = "self_signed_tls_client_auth"


#: Methods that send, or sign with, the client secret.
SECRET_METHODS = frozenset(
    {"client_secret_basic", "client_secret_post", "client_secret_jwt", "auto"}
)


# The values made of a method's RFC name and one piece of material, by that name.
_TLS_VALUES: dict[str, type[_TLSMethod]] = {
    cls.method: cls for cls in (MutualTLS, SelfSignedMutualTLS)
}
_SECRET_VALUES: dict[str, type[_SecretAuth]] = {
    cls.method: cls for cls in (ClientSecretBasic, ClientSecretPost, ClientSecret)
}


def implied_method(*, key: bool, secret: bool, cert: bool, token_url: bool) -> str | None:
    """The method loose material stands for when none is named (None: no material).

    A private key means `private_key_jwt`; a secret Basic with a token URL, else chosen by
    discovery (`auto`); a certificate alone mutual TLS.
    """
    if key:
        return "private_key_jwt"
    if secret:
        return "client_secret_basic" if token_url else "auto"
    return "tls_client_auth" if cert else None


def auth_for(
    method: str,
    *,
    who: str,
    names: Mapping[str, str],
    secret: str | None = None,
    key: str | Mapping[str, Any] | None = None,
    cert: str | None = None,
    key_id: str | None = None,
    alg: str | None = None,
    audience: str | None = None,
    lifetime: float = 60.0,
    certificate: str | None = None,
    cert_key: str | None = None,
    ca: str | None = None,
) -> ClientAuth:
    """The value of a method named by its RFC name, from loose material: the deprecated
    keywords of `ClientCredentials`, or a tenant of the command line's TOML.

    `names` says what the caller calls the `secret`, the `key` and the `cert` in its
    messages.

    Raises:
        ConfigurationError: An unknown method, or material missing or contradicting it.
    """
    if method not in AUTH_METHODS:
        raise ConfigurationError(
            f"auth_method {method!r} is not supported; use one of {AUTH_METHODS}"
        )
    if key is not None and method != "private_key_jwt":
        raise ConfigurationError(f"{who}: {names['key']} is only used with private_key_jwt")
    if method == "private_key_jwt":
        if key is None:
            raise ConfigurationError(f"{who}: private_key_jwt needs {names['key']} (PEM or JWK)")
        return PrivateKeyJWT(
            key, key_id=key_id, alg=alg, audience=audience, lifetime=lifetime,
            certificate=certificate,
        )  # fmt: skip
    tls = _TLS_VALUES.get(method)
    if tls is not None:
        if cert is None:
            raise ConfigurationError(f"{who}: {method} needs {names['cert']} (a PEM file path)")
        return tls(cert, key=cert_key, ca=ca)
    if secret is None:
        raise ConfigurationError(f"{names['secret']} for {who} is missing or empty")
    if cert is not None:
        raise ConfigurationError(
            f"{who}: {names['cert']} is only used with mutual TLS (tls_client_auth)"
        )
    if method == "client_secret_jwt":
        return ClientSecretJWT(
            secret, alg=alg or "HS256", key_id=key_id, audience=audience, lifetime=lifetime
        )
    return _SECRET_VALUES[method](secret)


def choose(auth: ClientAuth, supported: Collection[str] | None) -> ClientAuth:
    """The method to use with a server whose metadata lists `supported`.

    Only a `ClientSecret` is chosen for: `client_secret_basic`, the registration default
    (RFC 7591 section 2), when listed or when the server does not say (RFC 8414 section
    2), else `client_secret_post`; never `client_secret_jwt` merely because it is listed,
    since that says nothing of how this client was registered. Any other value is the
    user's explicit choice and is kept.

    Raises:
        ConfigurationError: A `ClientSecret` and a server offering neither secret method.
    """
    if not isinstance(auth, ClientSecret):
        return auth
    offered = ("client_secret_basic",) if supported is None else tuple(supported)
    if "client_secret_basic" in offered:
        return ClientSecretBasic(auth.secret)
    if "client_secret_post" in offered:
        return ClientSecretPost(auth.secret)
    hint = ""
    if "client_secret_jwt" in offered:
        hint = "; use auth=ClientSecretJWT(secret) if the client is registered for it"
    raise ConfigurationError(
        f"the authorization server supports {sorted(offered)} for client authentication, "
        f"neither client_secret_basic nor client_secret_post{hint}"
    )


def candidates(auth: ClientAuth) -> tuple[ClientAuth, ...]:
    """What to try, in order, with no metadata: a `ClientSecret` Basic, then the form body."""
    if isinstance(auth, ClientSecret):
        return (ClientSecretBasic(auth.secret), ClientSecretPost(auth.secret))
    return (auth,)


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
