"""The exceptions tokenflight raises.

```
TokenError
├── TokenRequestRefused ........ the IdP said no (RFC 6749 section 5.2 error)
├── TokenEndpointUnavailable ... the IdP could not be reached, or kept failing, after retries
├── MalformedTokenResponse ..... the IdP answered something that is not a usable token
├── ConfigurationError ......... the configuration is wrong
│   ├── UnknownTenantError ..... (also a LookupError) no credentials for this tenant
│   └── TenantResolutionError .. the resolver failed for this tenant
└── ManagerClosedError ......... the manager is not running (outside `async with`)
```

No message ever holds a client secret, an assertion or an access token; the client id may
appear, since it is what a user needs to find the failing tenant.
"""

from __future__ import annotations

import copy

__all__ = [
    "ConfigurationError",
    "MalformedTokenResponse",
    "ManagerClosedError",
    "TenantResolutionError",
    "TokenEndpointUnavailable",
    "TokenError",
    "TokenRequestRefused",
    "UnknownTenantError",
]


class TokenError(Exception):
    """Base class of every error tokenflight raises."""

    #: Whether retrying soon is pointless (a refusal or a configuration mistake).
    is_permanent: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def _clone(self) -> TokenError:
        # Each waiter raises its own copy so that tracebacks do not pile up on one shared instance.
        clone = copy.copy(self)
        clone.__cause__ = self.__cause__  # copy.copy drops the chain; keep the root cause
        clone.__suppress_context__ = self.__suppress_context__
        return clone


class TokenRequestRefused(TokenError):
    """The identity provider refused the token request (RFC 6749 section 5.2).

    Attributes:
        error: The RFC 6749 `error` code, such as `invalid_client`, or None when the
            provider's error body had none.
        error_description: The provider's human-readable description, if any.
        error_uri: The provider's link to more information, if any.
        status_code: The HTTP status of the refusal.
    """

    is_permanent = True

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
        status_code: int = 400,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status_code = status_code


class TokenEndpointUnavailable(TokenError):
    """The token endpoint could not be reached or kept failing, after retries.

    Attributes:
        endpoint: The token URL.
        attempts: How many requests were made.
        status_code: The last HTTP status (5xx, 429), or None for a transport failure.
        retry_after: Seconds the server asked to wait (`Retry-After`), if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        attempts: int = 0,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.attempts = attempts
        self.status_code = status_code
        self.retry_after = retry_after


class MalformedTokenResponse(TokenError):
    """The identity provider answered something that is not a usable token response.

    Attributes:
        status_code: The HTTP status of the response.
    """

    def __init__(self, message: str, *, status_code: int = 200) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConfigurationError(TokenError):
    """The configuration is wrong: fix it, retrying will not help."""

    is_permanent = True


class UnknownTenantError(ConfigurationError, LookupError):
    """No credentials are registered for this tenant, and no resolver knows it."""


class TenantResolutionError(ConfigurationError):
    """The tenant resolver raised an error or returned something unusable."""

    is_permanent = False


class ManagerClosedError(TokenError):
    """The manager is not running: use it inside `async with TokenManager() as tokens:`."""
