"""Authorization server discovery: RFC 8414 metadata, then OpenID Connect discovery.

`ClientCredentials(issuer=..., client_id=..., ...)` without `token_url` has its token
endpoint (and, for a `ClientSecret`, its client authentication method) read from the
issuer's metadata. The manager keeps one `Discovery`: metadata is fetched once per issuer,
by one request however many slots ask at once, and cached for as long as the server's
`Cache-Control: max-age` says (between a minute and a day), an hour when it does not say;
at most `MAX_ISSUERS` issuers are kept, the least recently used dropped first.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, final
from urllib.parse import urlsplit, urlunsplit

import httpx
from anyio.abc import TaskGroup

from ._client_auth import choose
from ._config import ClientCredentials, RetryPolicy, _check_url, with_auth
from ._errors import (
    ConfigurationError,
    MalformedTokenResponse,
    TokenEndpointUnavailable,
)
from ._flight import SingleFlight
from ._http import DECODING_ERRORS, TRANSPORT_ERRORS
from ._read import open_stream, read_bounded
from ._redact import redact_url

__all__ = ["Discovery", "ServerMetadata", "metadata_urls"]

logger = logging.getLogger("tokenflight")

MAX_METADATA_BYTES = 256 * 1024
#: Seconds metadata is kept when the server does not say (`Cache-Control: max-age`).
DEFAULT_METADATA_TTL = 3600.0
#: Bounds on a server's `max-age`: not asked on every fetch, not kept for ever.
MIN_METADATA_TTL, MAX_METADATA_TTL = 60.0, 86400.0
#: Issuers whose metadata is kept at once (least recently used dropped first).
MAX_ISSUERS = 1000

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerMetadata:
    """What tokenflight uses of an authorization server's metadata.

    Attributes:
        issuer: The issuer, identical to the configured one.
        token_endpoint: The token endpoint URL.
        auth_methods: `token_endpoint_auth_methods_supported`, or None when absent.
        mtls_endpoint_aliases: RFC 8705 `mtls_endpoint_aliases` (name to URL).
        ttl: Seconds to keep it (from `Cache-Control: max-age`, within bounds).
    """

    issuer: str
    token_endpoint: str
    auth_methods: tuple[str, ...] | None = None
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=dict)
    ttl: float = DEFAULT_METADATA_TTL


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

    def __init__(
        self,
        client: httpx.AsyncClient,
        tg: TaskGroup,
        retry: RetryPolicy,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._tg = tg
        self._clock = clock
        # issuer -> (metadata, loop time it expires), least recently used first.
        self._cache: OrderedDict[str, tuple[ServerMetadata, float]] = OrderedDict()
        self._flights: SingleFlight[tuple[str, bool], tuple[ServerMetadata, float]] = SingleFlight(
            budget=retry.total_timeout,
            remember_for=lambda error: retry.cooldown_for(1, permanent=error.is_permanent),
            failure=lambda message: TokenEndpointUnavailable(message, endpoint=""),
        )

    async def resolve(self, creds: ClientCredentials) -> tuple[ClientCredentials, float]:
        """Credentials given an issuer and no `token_url`, with the discovered `token_url`
        and the chosen authentication filled in, and the loop time until which they hold
        (the metadata's expiry).

        Raises:
            ConfigurationError: No metadata, a different issuer, or no usable method.
            TokenEndpointUnavailable: The metadata could not be fetched.
        """
        assert creds.issuer is not None  # ClientCredentials: without token_url, an issuer
        metadata, expires_at = await self.metadata(
            creds.issuer, allow_http=creds.allow_insecure_http
        )
        auth = choose(creds.client_auth, metadata.auth_methods)
        token_url = metadata.token_endpoint
        if auth.tls is not None:  # RFC 8705 section 5
            token_url = metadata.mtls_endpoint_aliases.get("token_endpoint", token_url)
            _check_url("mtls token_endpoint", token_url, allow_http=creds.allow_insecure_http)
        return with_auth(creds, auth, token_url), expires_at

    async def metadata(
        self, issuer: str, *, allow_http: bool = False
    ) -> tuple[ServerMetadata, float]:
        """The issuer's metadata and its expiry, cached or fetched once for all callers."""
        cached = self._cache.get(issuer)
        if cached is not None and self._clock() < cached[1]:
            self._cache.move_to_end(issuer)
            return cached

        async def work() -> tuple[ServerMetadata, float]:
            metadata = await self._fetch(issuer, allow_http)
            entry = self._cache[issuer] = (metadata, self._clock() + metadata.ttl)
            self._cache.move_to_end(issuer)
            while len(self._cache) > MAX_ISSUERS:
                self._cache.popitem(last=False)
            return entry

        key = (issuer, allow_http)
        return await self._flights.run(key, work, self._tg, what=f"discovering {issuer}")

    async def _fetch(self, issuer: str, allow_http: bool) -> ServerMetadata:
        for url in metadata_urls(issuer):
            found = await self._get(url)
            if found is not None:
                return _parse(*found, issuer, url, allow_http)
        raise ConfigurationError(
            f"issuer {redact_url(issuer)} publishes no authorization server metadata (RFC 8414 "
            "or OpenID Connect discovery); set token_url instead"
        )

    async def _get(self, url: str) -> tuple[dict[str, Any], float] | None:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        try:
            async with open_stream(
                self._client, "GET", url, headers=headers, follow_redirects=False
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
                ttl = metadata_ttl(response.headers.get("cache-control"))
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
        return document, ttl


def metadata_ttl(cache_control: str | None) -> float:
    """Seconds to keep metadata: its `max-age` within bounds; `no-store`/`no-cache` mean
    the shortest; the default when the server does not say."""
    if not cache_control:
        return DEFAULT_METADATA_TTL
    value = cache_control[:1024]
    match = _MAX_AGE.search(value)
    if match is not None:
        return min(MAX_METADATA_TTL, max(MIN_METADATA_TTL, float(match.group(1))))
    lowered = value.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return MIN_METADATA_TTL
    return DEFAULT_METADATA_TTL


def _parse(
    document: dict[str, Any], ttl: float, issuer: str, url: str, allow_http: bool
) -> ServerMetadata:
    if document.get("issuer") != issuer:
        raise ConfigurationError(
            f"metadata at {redact_url(url)} names issuer "
            f"{redact_url(str(document.get('issuer'))[:200])!r}, not the configured "
            f"{redact_url(issuer)!r} (RFC 8414 section 3.3): refusing it"
        )
    token_endpoint = document.get("token_endpoint")
    if not isinstance(token_endpoint, str) or len(token_endpoint) > 2048:
        raise ConfigurationError(f"metadata at {redact_url(url)} has no usable token_endpoint")
    _check_url("token_endpoint", token_endpoint, allow_http=allow_http)
    methods = document.get("token_endpoint_auth_methods_supported")
    aliases = document.get("mtls_endpoint_aliases")
    logger.debug("discovered %s from %s", token_endpoint, url)
    # Only what is used is kept, small: the document itself is untrusted and may be big.
    return ServerMetadata(
        issuer=issuer,
        token_endpoint=token_endpoint,
        auth_methods=tuple(m for m in methods[:64] if isinstance(m, str) and len(m) <= 64)
        if isinstance(methods, list)
        else None,
        mtls_endpoint_aliases={"token_endpoint": aliases["token_endpoint"]}
        if isinstance(aliases, dict) and isinstance(aliases.get("token_endpoint"), str)
        else {},
        ttl=ttl,
    )
