"""Configuration values: client credentials and the manager's policies."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, final
from urllib.parse import urlsplit

from ._client_auth import (
    AuthMethod,
    ClientAuth,
    auth_for,
    implied_method,
)
from ._errors import ConfigurationError
from ._redact import redact_url

__all__ = ["AuthMethod", "ClientCredentials", "RefreshPolicy", "RetryPolicy", "with_auth"]

# A cooldown set by `Retry-After` lasts up to this fraction longer, at random.
RETRY_AFTER_JITTER = 0.1

# Form fields the library sets itself; `extra_params` may not override them.
RESERVED_PARAMS = frozenset(
    {"grant_type", "client_id", "client_secret", "scope", "audience", "resource"}
    | {"client_assertion", "client_assertion_type"}
)


def is_loopback(host: str) -> bool:
    """Tell whether a URL host names this machine (plain http is allowed there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str, *, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{name} {redact_url(url)!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise ConfigurationError(f"{name} must not carry credentials in the URL")
    if parts.scheme == "http" and not (allow_http or is_loopback(parts.hostname)):
        raise ConfigurationError(
            f"{name} {redact_url(url)!r} uses plain http: credentials would cross the network "
            "in clear. Use https, or set allow_insecure_http=True for a trusted network."
        )


def _scope_tuple(name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, list, tuple, frozenset, set)):
        raise ConfigurationError(f"{name} must be a list of strings or one string")
    items = value.split() if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise ConfigurationError(f"{name} must be non-empty strings without spaces")
    return tuple(items)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCredentials:
    """How to get tokens for one tenant: the token endpoint and the client's credentials.

    ```python
    ClientCredentials(
        token_url="https://idp.example/oauth/token",
        client_id="acme",
        auth=ClientSecretBasic("s3cret"),
    )
    ```

    Args:
        token_url: The token endpoint. https is required except for loopback addresses or
            with `allow_insecure_http=True`. Leave it out and set `issuer` to discover it.
        client_id: The OAuth client id.
        auth: How the client authenticates: `ClientSecretBasic`, `ClientSecretPost`,
            `ClientSecret` (method chosen from discovery, else Basic then the form body),
            `ClientSecretJWT`, `PrivateKeyJWT`, `MutualTLS` or `SelfSignedMutualTLS`.
        issuer: The authorization server's issuer; without `token_url`, the token endpoint
            is discovered (RFC 8414, then OpenID Connect discovery), and for a
            `ClientSecret` the method too.
        dpop: Bind tokens to a key pair per slot with DPoP (RFC 9449); `TokenAuth` then
            sends `Authorization: DPoP` with a fresh proof on every request.
        scopes: Default scopes (a list, or one space-separated string), used when
            `get_token` is called without `scopes`.
        audience: Default `audience` form field (Auth0 and others).
        resource: Default RFC 8707 `resource` indicator(s).
        extra_params: Other form fields the provider wants.
        allow_insecure_http: Allow a plain-http token URL that is not loopback.
        client_secret: Deprecated shorthand (this release only): use `auth=`. So are
            `auth_method`, `private_key`, `key_id`, `signing_alg`, `assertion_audience`,
            `assertion_lifetime`, `client_cert`, `client_key` and `tls_ca_bundle`; see the
            migration table in the README.
    """

    token_url: str | None = None
    client_id: str
    auth: ClientAuth | None = None
    issuer: str | None = None
    dpop: bool = False
    scopes: Sequence[str] = ()
    audience: str | None = None
    resource: str | Sequence[str] | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    allow_insecure_http: bool = False
    # Deprecated keyword form, kept for one release; `auth=` replaces it.
    client_secret: str | None = field(default=None, repr=False)
    auth_method: AuthMethod | None = field(default=None, repr=False)
    private_key: str | Mapping[str, Any] | None = field(default=None, repr=False)
    key_id: str | None = field(default=None, repr=False)
    signing_alg: str | None = field(default=None, repr=False)
    assertion_audience: str | None = field(default=None, repr=False)
    assertion_lifetime: float = field(default=60.0, repr=False)
    client_cert: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)
    tls_ca_bundle: str | None = field(default=None, repr=False)
    # The authentication in use: `auth`, or what the deprecated keywords say. Derived in
    # `__post_init__` from this instance's own fields, so `dataclasses.replace` recomputes it.
    _client_auth: ClientAuth = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigurationError("client_id must be a non-empty string")
        self._check_endpoint()
        object.__setattr__(self, "_client_auth", self._effective_auth())
        self._client_auth.check(issuer=self.issuer)
        if not isinstance(self.dpop, bool):
            raise ConfigurationError("dpop must be True or False")
        object.__setattr__(self, "scopes", _scope_tuple("scopes", self.scopes))
        object.__setattr__(self, "resource", _normalize_resource(self.resource))
        if self.audience is not None and (not isinstance(self.audience, str) or not self.audience):
            raise ConfigurationError("audience must be a non-empty string or None")
        extra = dict(self.extra_params)
        for name, value in extra.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ConfigurationError("extra_params must map strings to strings")
            if name in RESERVED_PARAMS:
                raise ConfigurationError(
                    f"extra_params may not set {name!r}: use the ClientCredentials field instead"
                )
        object.__setattr__(self, "extra_params", extra)

    @property
    def client_auth(self) -> ClientAuth:
        """The client authentication in use (`auth`, or built from the deprecated keywords)."""
        return self._client_auth

    def __hash__(self) -> int:
        return hash((self.token_url, self.client_id, self.issuer, tuple(self.scopes)))

    def _check_endpoint(self) -> None:
        for name in ("token_url", "issuer"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise ConfigurationError(f"{name} must be a string")
                _check_url(name, value, allow_http=self.allow_insecure_http)
        if self.token_url is None and self.issuer is None:
            raise ConfigurationError(
                f"client {self.client_id!r}: set token_url, or issuer to discover it"
            )
        if self.issuer is not None and (urlsplit(self.issuer).query or "#" in self.issuer):
            raise ConfigurationError("issuer must not have a query or fragment (RFC 8414)")

    def _effective_auth(self) -> ClientAuth:
        legacy = [name for name in _LEGACY if getattr(self, name) != _LEGACY[name]]
        if self.auth is not None:
            if not isinstance(self.auth, ClientAuth):
                raise ConfigurationError(
                    "auth must be a client authentication value such as "
                    "ClientSecretBasic(secret), not "
                    f"{type(self.auth).__name__}"
                )
            if legacy:
                raise ConfigurationError(
                    f"client {self.client_id!r}: give auth= or the deprecated "
                    f"{', '.join(legacy)}, not both"
                )
            return self.auth
        if not legacy:
            raise ConfigurationError(
                f"client {self.client_id!r}: set auth=, for example "
                "auth=ClientSecretBasic(secret) or auth=PrivateKeyJWT(key)"
            )
        keywords = ", ".join(f"{name}=" for name in legacy)
        try:
            auth = legacy_auth(self)
        except ConfigurationError:
            instead = "auth= with a value such as ClientSecretBasic(secret)"
            raise
        else:
            instead = f"auth={type(auth).__name__}(...)"
        finally:
            warnings.warn(
                f"ClientCredentials({keywords}) is deprecated and will be removed in the next "
                f"release: use {instead} (see the README's migration table)",
                DeprecationWarning,
                stacklevel=4,
            )
        return auth


# The deprecated keywords and their defaults.
_LEGACY: dict[str, object] = {
    "client_secret": None,
    "auth_method": None,
    "private_key": None,
    "key_id": None,
    "signing_alg": None,
    "assertion_audience": None,
    "assertion_lifetime": 60.0,
    "client_cert": None,
    "client_key": None,
    "tls_ca_bundle": None,
}


#: What the deprecated keywords call the secret, the key and the certificate.
_LEGACY_NAMES = {"secret": "client_secret", "key": "private_key", "cert": "client_cert"}


def legacy_auth(creds: ClientCredentials) -> ClientAuth:
    """The client authentication value the deprecated keyword form stands for.

    Raises:
        ConfigurationError: The keywords are missing a part or contradict each other.
    """
    who = f"client {creds.client_id!r}"
    secret = creds.client_secret
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigurationError(f"client_secret for {who} is empty or not a string")
    method = creds.auth_method or implied_method(
        key=creds.private_key is not None,
        secret=secret is not None,
        cert=creds.client_cert is not None,
        token_url=creds.token_url is not None,
    )
    if method is None:
        raise ConfigurationError(f"{who}: give client_secret or private_key")
    return auth_for(
        method,
        who=who,
        names=_LEGACY_NAMES,
        secret=secret,
        key=creds.private_key,
        cert=creds.client_cert,
        key_id=creds.key_id,
        alg=creds.signing_alg,
        audience=creds.assertion_audience,
        lifetime=creds.assertion_lifetime,
        cert_key=creds.client_key,
        ca=creds.tls_ca_bundle,
    )


def with_auth(creds: ClientCredentials, auth: ClientAuth, token_url: str) -> ClientCredentials:
    """The credentials with a discovered token URL and a chosen authentication value."""
    cleared: dict[str, Any] = dict(_LEGACY)
    return dataclasses.replace(creds, token_url=token_url, auth=auth, **cleared)


def _normalize_resource(value: object) -> str | tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise ConfigurationError("resource must be an absolute URI or a list of them")
    for item in items:
        if not isinstance(item, str) or not urlsplit(item).scheme or "#" in item:
            raise ConfigurationError(
                f"resource {item!r} must be an absolute URI without a fragment (RFC 8707)"
            )
    return items[0] if len(items) == 1 else tuple(sorted(items))


def normalize_resource(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """Validate a resource indicator given at call time and give it its canonical form."""
    return _normalize_resource(value)


def normalize_scopes(value: str | tuple[str, ...] | list[str] | frozenset[str]) -> frozenset[str]:
    """Turn a scope list (or a space-separated string) into the set used in slot keys."""
    items = value if isinstance(value, str) else list(value)
    return frozenset(_scope_tuple("scopes", items))


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ConfigurationError(f"{name} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}")


def check_manager_options(
    *,
    max_concurrent_fetches: int | None,
    max_fetches_per_origin: int | None,
    max_fetch_rate_per_origin: float | None,
    credentials_ttl: float | None,
) -> None:
    """`TokenManager`'s own numbers (its policies check themselves)."""
    for name, count in (
        ("max_concurrent_fetches", max_concurrent_fetches),
        ("max_fetches_per_origin", max_fetches_per_origin),
    ):
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ConfigurationError(f"{name} must be an integer >= 1 or None")
    if credentials_ttl is not None and not 0 <= credentials_ttl < float("inf"):
        raise ConfigurationError("credentials_ttl must be a number of seconds >= 0, or None")
    rate = max_fetch_rate_per_origin
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf
    ):
        raise ConfigurationError(
            "max_fetch_rate_per_origin must be a number of requests per second > 0, or None"
        )


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How token requests are retried, and how long a failure is remembered.

    Transport errors, timeouts, 5xx and 429 are retried with exponential backoff and full
    jitter; a `Retry-After` header is honoured when it fits in the budget. Refusals (4xx)
    are never retried.

    Args:
        attempts: Requests per fetch, the first included.
        initial_wait: The first backoff, in seconds.
        max_wait: The largest single backoff, in seconds.
        total_timeout: The budget for one fetch, retries and waits included, in seconds.
        cooldown: How long a transient failure (unavailable, malformed) is remembered before
            the next request, doubling on each repeated failure up to `max_cooldown`; at
            least the server's `Retry-After` (plus up to 10 % jitter) when it sent one.
            Also how long a 429 without `Retry-After` cools down its identity provider.
        permanent_cooldown: The same, for refusals and configuration mistakes.
        max_cooldown: The cap on both cooldowns, and on any `Retry-After` (a provider
            asking for an hour is asked again after `max_cooldown`).
    """

    attempts: int = 4
    initial_wait: float = 0.2
    max_wait: float = 5.0
    total_timeout: float = 30.0
    cooldown: float = 1.0
    permanent_cooldown: float = 30.0
    max_cooldown: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be an integer >= 1")
        for name in ("initial_wait", "max_wait", "cooldown", "permanent_cooldown", "max_cooldown"):
            _positive(f"RetryPolicy.{name}", getattr(self, name), allow_zero=True)
        _positive("RetryPolicy.total_timeout", self.total_timeout)

    def cooldown_for(
        self, failures: int, *, permanent: bool, retry_after: float | None = None
    ) -> float:
        """The cooldown after the given number of consecutive failures.

        A server's `Retry-After` (seconds) lengthens it to that time, plus up to a tenth
        more at random so that tenants held back together do not return together; an
        absurd `Retry-After` is capped at `max_cooldown`.
        """
        base = self.permanent_cooldown if permanent else self.cooldown
        cooldown = float(min(self.max_cooldown, base * 2 ** min(failures - 1, 30)))
        if retry_after is not None and retry_after > 0:
            announced = retry_after * random.uniform(1.0, 1.0 + RETRY_AFTER_JITTER)
            cooldown = max(cooldown, min(self.max_cooldown, announced))
        return cooldown


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshPolicy:
    """When tokens are refreshed, treated as expired, and forgotten.

    Args:
        fraction: Refresh in the background once this fraction of the lifetime has passed.
        jitter: Subtract up to this fraction at random, so tenants fetched together do not
            refresh together (refresh happens between `fraction - jitter` and `fraction`).
        leeway: Treat a token as expired this many seconds before its real expiry; scaled
            down to a tenth of the lifetime for short-lived tokens.
        idle_timeout: A slot nobody asked for in this many seconds is idle: its token is
            not refreshed in the background again, but it is served until it expires
            (tokens cost money); an idle slot holding no valid token is evicted.
        max_slots: At most this many slots (one per tenant and audience, resource and
            scopes) are kept; beyond it the least recently used are evicted, idle ones
            first, about 1 % of the cap in one sweep. The memory bound: a slot holding
            a token takes a few KB, so the default of 100,000 stays within a few hundred
            MB while a many-tenant backend rarely reaches it.
        max_concurrent: Background refreshes running at once.
        default_lifetime: Lifetime assumed when the provider gives no usable `expires_in`
            and the token is not a JWT with `exp`.
        max_lifetime: Longer lifetimes are clamped to this (never cache forever).
    """

    fraction: float = 0.8
    jitter: float = 0.1
    leeway: float = 10.0
    idle_timeout: float = 900.0
    max_slots: int = 100_000
    max_concurrent: int = 10
    default_lifetime: float = 300.0
    max_lifetime: float = 86400.0

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ConfigurationError("RefreshPolicy.fraction must be between 0 and 1")
        if not 0 <= self.jitter < self.fraction:
            raise ConfigurationError("RefreshPolicy.jitter must be >= 0 and below fraction")
        _positive("RefreshPolicy.leeway", self.leeway, allow_zero=True)
        _positive("RefreshPolicy.idle_timeout", self.idle_timeout)
        _positive("RefreshPolicy.default_lifetime", self.default_lifetime)
        _positive("RefreshPolicy.max_lifetime", self.max_lifetime)
        if not isinstance(self.max_concurrent, int) or self.max_concurrent < 1:
            raise ConfigurationError("RefreshPolicy.max_concurrent must be an integer >= 1")
        if (
            not isinstance(self.max_slots, int)
            or isinstance(self.max_slots, bool)
            or self.max_slots < 1
        ):
            raise ConfigurationError("RefreshPolicy.max_slots must be an integer >= 1")

    def leeway_for(self, lifetime: float) -> float:
        """The leeway for a token of this lifetime: short tokens get a proportional one."""
        return min(self.leeway, lifetime * 0.1)
