"""Configuration values: client credentials and the manager's policies."""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, final, get_args
from urllib.parse import urlsplit

from ._errors import ConfigurationError
from ._redact import redact_url

__all__ = ["AuthMethod", "ClientCredentials", "RefreshPolicy", "RetryPolicy"]

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


def _scope_tuple(name: str, value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split() if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise ConfigurationError(f"{name} must be non-empty strings without spaces")
    return tuple(items)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCredentials:
    """How to get tokens for one tenant: the token endpoint and the client's credentials.

    Args:
        token_url: The token endpoint. https is required except for loopback addresses or
            with `allow_insecure_http=True`. Leave it out and set `issuer` to discover it.
        client_id: The OAuth client id.
        client_secret: The client secret. Never shown in `repr`, logs or errors. Not needed
            for `private_key_jwt`.
        auth_method: `client_secret_basic` (HTTP Basic, RFC 6749 section 2.3.1),
            `client_secret_post` (id and secret in the form body), `client_secret_jwt` or
            `private_key_jwt` (a signed assertion, RFC 7523), or `auto` (Basic, then the form
            body on `invalid_client`). Default: `private_key_jwt` with a `private_key`;
            with a secret `client_secret_basic`, or `client_secret_post` when a discovered
            server lists only that (never a JWT method unasked); with a `client_cert`
            alone, mutual TLS.
        issuer: The authorization server's issuer; without `token_url`, the token endpoint
            and auth methods are discovered (RFC 8414, then OpenID Connect discovery).
        private_key: For `private_key_jwt`: a PEM string or a JWK dict. Never shown.
        key_id: The `kid` header of assertions (default: the JWK's own `kid`, if any).
        signing_alg: RS256, PS256 or ES256 (`private_key_jwt`; default from the key) or
            HS256 (`client_secret_jwt`).
        assertion_audience: The assertion's `aud`: the token endpoint by default, `"issuer"`
            for the issuer, or an explicit URL.
        assertion_lifetime: Seconds an assertion is valid (`exp - iat`).
        dpop: Bind tokens to a key pair per slot with DPoP (RFC 9449); `TokenAuth` then
            sends `Authorization: DPoP` with a fresh proof on every request.
        client_cert: Path of a PEM client certificate (chain) presented to the token
            endpoint: mutual TLS (RFC 8705) for `tls_client_auth` and
            `self_signed_tls_client_auth`. Each certificate gets its own connection pool.
        client_key: Path of the certificate's private key, if not in `client_cert`.
        tls_ca_bundle: Path of the CA bundle that verifies the token endpoint over mutual
            TLS (default: the system's trust store).
        scopes: Default scopes, used when `get_token` is called without `scopes`.
        audience: Default `audience` form field (Auth0 and others).
        resource: Default RFC 8707 `resource` indicator(s).
        extra_params: Other form fields the provider wants.
        allow_insecure_http: Allow a plain-http token URL that is not loopback.
    """

    token_url: str | None = None
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: AuthMethod | None = None
    issuer: str | None = None
    private_key: str | Mapping[str, Any] | None = field(default=None, repr=False)
    key_id: str | None = None
    signing_alg: str | None = None
    assertion_audience: str | None = None
    assertion_lifetime: float = 60.0
    dpop: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    tls_ca_bundle: str | None = None
    _signing_key: Any = field(default=None, init=False, repr=False, compare=False)
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    resource: str | tuple[str, ...] | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        from ._client_auth import check_credentials

        check_credentials(self, _check_url)
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

    def __hash__(self) -> int:
        return hash((self.token_url, self.client_id, self.auth_method, self.scopes))


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


def normalize_resource(
    value: str | tuple[str, ...] | list[str] | None,
) -> str | tuple[str, ...] | None:
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
