"""Values of the bundled identity provider: profiles, clients, faults and request records."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, final

__all__ = [
    "PROFILE_NAMES",
    "PROFILES",
    "Fault",
    "IdPClient",
    "Profile",
    "TokenRequestRecord",
]

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """How one real identity provider behaves at its token endpoint.

    Attributes:
        name: The profile's name, a key of `PROFILES`.
        token_path: The path of the token endpoint.
        basic_auth: Whether HTTP Basic client authentication is accepted.
        form_auth: Whether ``client_id``/``client_secret`` in the form body are accepted.
        token_lifetime: The default ``expires_in``, in seconds.
        token_type: The ``token_type`` the provider answers.
        include_scope: Whether the response carries the granted ``scope``.
        audience_required: Whether a request must name an audience (Auth0).
        default_audience: The audience used when neither the request nor the client names one.
        auth0_errors: Whether refusals use Auth0's ``access_denied``/403 style instead of
            RFC 6749 section 5.2.
    """

    name: str
    token_path: str
    basic_auth: bool = True
    form_auth: bool = True
    token_lifetime: float = 3600
    token_type: str = "Bearer"
    include_scope: bool = True
    audience_required: bool = False
    default_audience: str | None = None
    auth0_errors: bool = False


_PROFILES = (
    Profile(name="generic", token_path="/oauth/token"),
    Profile(
        name="dwolla",
        token_path="/token",
        form_auth=False,
        token_lifetime=3599,
        token_type="bearer",
        include_scope=False,
    ),
    Profile(
        name="dwolla-legacy",
        token_path="/oauth/v2/token",
        basic_auth=False,
        token_lifetime=3600,
        token_type="bearer",
        include_scope=False,
    ),
    Profile(
        name="auth0",
        token_path="/oauth/token",
        token_lifetime=86400,
        audience_required=True,
        auth0_errors=True,
    ),
    Profile(
        name="oauth-school",
        token_path="/oauth/token",
        token_lifetime=86400,
        audience_required=True,
        default_audience="https://api.oauth-school.example",
        auth0_errors=True,
    ),
)

#: The bundled profiles by name.
PROFILES: Mapping[str, Profile] = MappingProxyType({p.name: p for p in _PROFILES})
#: The names accepted by ``IdentityProvider(profile=...)``.
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)

#: The provider profiles, by name (what `IdentityProvider(profile=...)` takes).
ProfileName = Literal["generic", "dwolla", "dwolla-legacy", "auth0", "oauth-school"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class IdPClient:
    """A client registered with the identity provider.

    Attributes:
        client_id: The client identifier.
        secret: The client secret (never shown in the ``repr``).
        audiences: The audiences/resources the client may ask for; ``None`` allows any.
        scopes: The scopes the client may ask for, also granted when a request names none;
            ``None`` allows any scope and grants none by default.
        default_audience: The audience used when a request names none.
        token_lifetime: Overrides the identity provider's token lifetime for this client.
        public_key: For ``private_key_jwt``: a PEM string, a JWK or a JWKS (``{"keys": []}``).
        tls_subject: For ``tls_client_auth``: the certificate subject DN (RFC 4514 string).
        tls_certificate: For ``self_signed_tls_client_auth``: the registered certificate
            (PEM or DER).
        key_certificate: For ``private_key_jwt`` as Microsoft Entra ID does it: the
            certificate of the client's key (PEM); assertions must name it in their
            ``x5t#S256`` header.
    """

    client_id: str
    secret: str = field(repr=False)
    audiences: frozenset[str] | None = None
    scopes: tuple[str, ...] | None = None
    default_audience: str | None = None
    token_lifetime: float | None = None
    public_key: str | Mapping[str, Any] | None = field(default=None, repr=False)
    tls_subject: str | None = None
    tls_certificate: str | bytes | None = field(default=None, repr=False)
    key_certificate: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if self.token_lifetime is not None:
            check_lifetime(self.token_lifetime)


@final
@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour injected into the answers to token requests.

    A fault with only ``delay`` answers normally after the delay. A fault with ``status``
    answers that status with ``body`` (a small JSON error fitting the status when ``None``).
    A fault with ``drop`` reads the request and closes the connection without an answer;
    with ``drop`` and ``status`` together it closes after sending the status line and part
    of the headers (a response broken mid-way).

    Attributes:
        status: The HTTP status to answer instead of the normal response.
        body: The response body for ``status``.
        content_type: The ``Content-Type`` of the faulty response.
        headers: Extra response headers (for example ``Retry-After`` or ``Location``).
        drop: Close the connection instead of answering.
        delay: Seconds to wait before answering (or dropping).
    """

    status: int | None = None
    body: bytes | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    drop: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay}")
        if self.body is not None and self.status is None:
            raise ValueError("body needs a status")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequestRecord:
    """One request received at the token endpoint.

    Attributes:
        time: When it arrived, on the identity provider's clock.
        client_id: The client it authenticated as (or claimed to), if any.
        audience: The requested audience (after the client's default), if any.
        resource: The requested ``resource`` indicators (RFC 8707).
        scope: The requested ``scope``, as sent.
        auth_method: How the client authenticated, if it did.
        status: The HTTP status answered; ``None`` when the connection was dropped.
        form: The form parameters, without ``client_secret``.
        user_agent: The ``User-Agent`` header, if any (which HTTP library sent it).
    """

    time: float
    client_id: str | None
    audience: str | None
    resource: tuple[str, ...]
    scope: str | None
    auth_method: AuthMethod | None
    status: int | None
    form: Mapping[str, str]
    user_agent: str | None = None


def check_lifetime(value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"token_lifetime must be a finite number > 0, got {value}")


def expires_in_value(seconds: float) -> int | float:
    """``expires_in`` as sent: an int when whole, else a float rounded to milliseconds."""
    if float(seconds).is_integer():
        return int(seconds)
    return round(seconds, 3)
