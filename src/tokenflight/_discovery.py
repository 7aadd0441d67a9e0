"""Authorization server discovery: RFC 8414 metadata, then OpenID Connect discovery.

`ClientCredentials(issuer=..., client_id=..., ...)` without `token_url` has its token
endpoint (and, without `auth_method`, its client authentication method) read from the
issuer's metadata. The manager keeps one `Discovery`: metadata is fetched once per issuer,
by one request however many slots ask at once, and then cached for the manager's life.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, final
from urllib.parse import urlsplit, urlunsplit

import httpx
from anyio.abc import TaskGroup

from ._client_auth import choose_auth_method
from ._config import ClientCredentials, RetryPolicy, _check_url
from ._errors import (
    ConfigurationError,
    MalformedTokenResponse,
    TokenEndpointUnavailable,
)
from ._flight import SingleFlight
from ._http import DECODING_ERRORS, TRANSPORT_ERRORS
from ._read import read_bounded
from ._redact import redact_url

__all__ = ["Discovery", "ServerMetadata", "metadata_urls"]

logger = logging.getLogger("tokenflight")

MAX_METADATA_BYTES = 256 * 1024


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerMetadata:
    """What tokenflight uses of an authorization server's metadata.

    Attributes:
        issuer: The issuer, identical to the configured one.
        token_endpoint: The token endpoint URL.
        auth_methods: `token_endpoint_auth_methods_supported`, or None when absent.
        mtls_endpoint_aliases: RFC 8705 `mtls_endpoint_aliases` (name to URL).
        document: The whole metadata document.
    """

    issuer: str
    token_endpoint: str
    auth_methods: tuple[str, ...] | None = None
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)


def metadata_urls(issuer: str) -> tuple[str, str]:
    """The RFC 8414 and the OpenID Connect discovery URLs of an issuer.

    RFC 8414 section 3.1 inserts the well-known segment before the issuer's path; OpenID
    Connect Discovery section 4 appends it.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oauth = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    oidc = urlunsplit(
        (parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", "")
    )
    return oauth, oidc


class Discovery:
    """Fetches and caches authorization server metadata, one request per issuer.

    The fetch is a single flight in the manager's task group with the fetch budget; a
    failure is shared by every waiter and remembered for the retry cooldown, so tenants
    on a broken issuer do not each ask it again.
    """

    def __init__(self, client: httpx.AsyncClient, tg: TaskGroup, retry: RetryPolicy) -> None:
        self._client = client
        self._tg = tg
        self._cache: dict[str, ServerMetadata] = {}
        self._flights: SingleFlight[tuple[str, bool], ServerMetadata] = SingleFlight(
            budget=retry.total_timeout,
            remember_for=lambda error: retry.cooldown_for(1, permanent=error.is_permanent),
            failure=lambda message: TokenEndpointUnavailable(message, endpoint=""),
        )

    async def resolve(self, creds: ClientCredentials) -> ClientCredentials:
        """The credentials with `token_url` and `auth_method` filled in from discovery.

        Raises:
            ConfigurationError: No metadata, a different issuer, or no usable method.
            TokenEndpointUnavailable: The metadata could not be fetched.
        """
        if creds.token_url is not None and creds.auth_method is not None:
            return creds
        assert creds.issuer is not None  # ClientCredentials guarantees it
        metadata = await self.metadata(creds.issuer, allow_http=creds.allow_insecure_http)
        method = creds.auth_method or choose_auth_method(creds, metadata.auth_methods)
        token_url = creds.token_url or metadata.token_endpoint
        if creds.token_url is None and creds.client_cert is not None:  # RFC 8705 section 5
            token_url = metadata.mtls_endpoint_aliases.get("token_endpoint", token_url)
            _check_url("mtls token_endpoint", token_url, allow_http=creds.allow_insecure_http)
        return dataclasses.replace(
            creds,
            token_url=token_url,
            auth_method=method,  # type: ignore[arg-type]
        )

    async def metadata(self, issuer: str, *, allow_http: bool = False) -> ServerMetadata:
        """The issuer's metadata, from the cache or fetched once for all concurrent callers."""
        cached = self._cache.get(issuer)
        if cached is not None:
            return cached

        async def work() -> ServerMetadata:
            self._cache[issuer] = metadata = await self._fetch(issuer, allow_http)
            return metadata

        key = (issuer, allow_http)
        return await self._flights.run(key, work, self._tg, what=f"discovering {issuer}")

    async def _fetch(self, issuer: str, allow_http: bool) -> ServerMetadata:
        for url in metadata_urls(issuer):
            document = await self._get(url)
            if document is not None:
                return _parse(document, issuer, url, allow_http)
        raise ConfigurationError(
            f"issuer {redact_url(issuer)} publishes no authorization server metadata (RFC 8414 "
            "or OpenID Connect discovery); set token_url instead"
        )

    async def _get(self, url: str) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        try:
            async with self._client.stream(
                "GET", url, headers=headers, follow_redirects=False
            ) as response:
                status = response.status_code
                if status in (404, 410):
                    return None
                if status == 429 or status >= 500:
                    raise TokenEndpointUnavailable(
                        f"metadata {redact_url(url)} answered HTTP {status}",
                        endpoint=url,
                        status_code=status,
                    )
                if status != 200:
                    raise MalformedTokenResponse(
                        f"metadata {redact_url(url)} answered HTTP {status}", status_code=status
                    )
                body = await read_bounded(
                    response, limit=MAX_METADATA_BYTES, what=f"metadata {redact_url(url)}"
                )
        except TRANSPORT_ERRORS as exc:
            raise TokenEndpointUnavailable(
                f"could not fetch metadata {redact_url(url)}: {type(exc).__name__}", endpoint=url
            ) from exc
        except DECODING_ERRORS as exc:
            raise MalformedTokenResponse(
                f"metadata {redact_url(url)} could not be decoded"
            ) from exc
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting too
            raise MalformedTokenResponse(
                f"metadata {redact_url(url)} is not JSON", status_code=status
            ) from exc
        if not isinstance(document, dict):
            raise MalformedTokenResponse(
                f"metadata {redact_url(url)} is not a JSON object", status_code=status
            )
        return document


def _parse(document: dict[str, Any], issuer: str, url: str, allow_http: bool) -> ServerMetadata:
    if document.get("issuer") != issuer:
        raise ConfigurationError(
            f"metadata at {redact_url(url)} names issuer "
            f"{redact_url(str(document.get('issuer'))[:200])!r}, not the configured "
            f"{redact_url(issuer)!r} (RFC 8414 section 3.3): refusing it"
        )
    token_endpoint = document.get("token_endpoint")
    if not isinstance(token_endpoint, str):
        raise ConfigurationError(f"metadata at {redact_url(url)} has no token_endpoint")
    _check_url("token_endpoint", token_endpoint, allow_http=allow_http)
    methods = document.get("token_endpoint_auth_methods_supported")
    aliases = document.get("mtls_endpoint_aliases")
    logger.debug("discovered %s from %s", token_endpoint, url)
    return ServerMetadata(
        issuer=issuer,
        token_endpoint=token_endpoint,
        auth_methods=tuple(m for m in methods if isinstance(m, str))
        if isinstance(methods, list)
        else None,
        mtls_endpoint_aliases={
            k: v for k, v in aliases.items() if isinstance(k, str) and isinstance(v, str)
        }
        if isinstance(aliases, dict)
        else {},
        document=document,
    )
