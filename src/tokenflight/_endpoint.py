"""Token requests: client authentication, the HTTP exchange, retries and response checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from ._client_auth import ClientAuth, candidates
from ._config import ClientCredentials, RefreshPolicy, RetryPolicy
from ._dpop import DPOP_TOKEN_TYPES, DPoPProver
from ._errors import (
    ConfigurationError,
    MalformedTokenResponse,
    TokenEndpointUnavailable,
    TokenRequestRefused,
)
from ._hooks import endpoint_host
from ._http import DECODING_ERRORS, TRANSPORT_ERRORS
from ._origins import RateLimits, RequestPace, origin_of
from ._read import open_stream, read_bounded
from ._redact import RedactedDict, redact_url
from ._token import (
    SUPPORTED_TOKEN_TYPES,
    Token,
    parse_error,
    parse_retry_after,
    parse_token_response,
)

__all__ = ["MAX_BODY_BYTES", "TokenEndpoint", "TokenRequest"]

logger = logging.getLogger("tokenflight")

#: Token responses are small; read no further than this.
MAX_BODY_BYTES = 64 * 1024


# `tokenflight.testing.set_testing()` flips this to make retries wait zero seconds, and
# may cap the attempts per token request.
@dataclass(slots=True)
class TestingMode:
    """Whether retries wait, and at most how many attempts a token request makes."""

    no_wait: bool = False
    attempts: int | None = None


_testing = TestingMode()


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What one slot asks the token endpoint for (the non-secret half of a request)."""

    scopes: tuple[str, ...]
    audience: str | None
    resource: str | tuple[str, ...] | None


def build_form(
    creds: ClientCredentials, request: TokenRequest, *, auth: ClientAuth | None = None
) -> tuple[dict[str, str | list[str]], dict[str, str]]:
    """The form fields and headers of a token request (`auth` overrides the credentials').

    Both are `RedactedDict`s: the secret, the Basic value and the assertion they carry stay
    out of the locals an error reporter records from every frame they pass through.
    """
    form: dict[str, str | list[str]] = RedactedDict(grant_type="client_credentials")
    headers: dict[str, str] = RedactedDict(
        {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
    )
    (auth or creds.client_auth).apply(
        client_id=creds.client_id,
        token_url=creds.token_url or "",
        issuer=creds.issuer,
        form=form,
        headers=headers,
    )
    if request.scopes:
        form["scope"] = " ".join(request.scopes)
    if request.audience is not None:
        form["audience"] = request.audience
    if request.resource is not None:
        resource = request.resource
        form["resource"] = resource if isinstance(resource, str) else list(resource)
    form.update(creds.extra_params)
    return form, headers


class _Retryable(TokenEndpointUnavailable):
    """One failed attempt that is worth another (transport error, 5xx, 429)."""


@dataclass(slots=True)
class AttemptLog:
    """What a token request's retries cost: attempts sent, seconds waited between them."""

    attempts: int = 0
    waited: float = 0.0


#: The attempt log of the current task's last token request (the flight reads it when the
#: fetch ends, for instrumentation); None before any.
attempt_log: ContextVar[AttemptLog | None] = ContextVar("tokenflight_attempts", default=None)


def _wait(policy: RetryPolicy, cooling: Callable[[], float]) -> Callable[[RetryCallState], float]:
    """Backoff with jitter, at least the `Retry-After` and the origin's cooldown (`cooling`)."""
    backoff = wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        if _testing.no_wait:
            return 0.0
        delay = max(backoff(state), cooling())
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    return wait


def _count_wait(state: RetryCallState) -> None:
    """Add a wait to the attempt log once it is certain (a wait past the budget is not)."""
    log = attempt_log.get()
    if log is not None:
        log.waited += state.upcoming_sleep


class TokenEndpoint:
    """Sends token requests through one shared `AsyncClient` (httpx or httpx2), with retries."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        retry: RetryPolicy,
        refresh: RefreshPolicy,
        clock: Callable[[], float],
        client_for: Callable[[ClientAuth], httpx.AsyncClient | None],
        rate_limits: RateLimits | None = None,
        pace: RequestPace | None = None,
    ) -> None:
        self._client = client
        self._retry = retry
        self._refresh = refresh
        self._clock = clock
        # The client of a mutual-TLS certificate, or None for the shared client.
        self._client_for = client_for
        # Told of every 429 (and 503 with Retry-After): the provider's cooldown, all tenants.
        self._rate_limits = rate_limits or RateLimits(
            clock, max_cooldown=retry.max_cooldown, default=retry.cooldown
        )
        # A ceiling of requests per second per provider, retries included (optional).
        self._pace = pace
        # For a `ClientSecret` without discovery: the method that worked, per token URL.
        self._auto_methods: dict[str, int] = {}

    async def fetch(
        self, creds: ClientCredentials, request: TokenRequest, *, dpop: DPoPProver | None = None
    ) -> Token:
        """Get a new token, retrying transient failures within the policy's budget.

        A `ClientSecret` tries Basic first and the form body once on `invalid_client`;
        what worked is remembered per token URL. With `dpop`, each request carries a DPoP
        proof and a DPoP token type is accepted.

        Raises:
            TokenRequestRefused: The provider said no (not retried).
            TokenEndpointUnavailable: Transport errors, 5xx or 429 outlasted the budget.
            MalformedTokenResponse: The answer is not a usable token.
            ConfigurationError: The endpoint redirected, or was not discovered.
        """
        url = creds.token_url
        if url is None:
            raise ConfigurationError(
                f"client {creds.client_id!r} has no token_url: it is discovered from the "
                "issuer by a TokenManager"
            )
        choices = candidates(creds.client_auth)
        known = self._auto_methods.get(url) if len(choices) > 1 else 0
        if known is not None:
            return await self.fetch_with(creds, request, choices[known], dpop=dpop)
        for index, auth in enumerate(choices):
            try:
                token = await self.fetch_with(creds, request, auth, dpop=dpop)
            except TokenRequestRefused as exc:
                if exc.error != "invalid_client" or index == len(choices) - 1:
                    raise
                logger.info(
                    "token endpoint %s refused %s; trying %s",
                    redact_url(url),
                    auth.method,
                    choices[index + 1].method,
                )
                continue
            self._auto_methods[url] = index
            return token
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch_with(
        self,
        creds: ClientCredentials,
        request: TokenRequest,
        auth: ClientAuth,
        *,
        dpop: DPoPProver | None = None,
    ) -> Token:
        """Get a new token authenticating with `auth`, retrying transient failures.

        Raises:
            TokenRequestRefused: The provider said no (not retried).
            TokenEndpointUnavailable: Transport errors, 5xx or 429 outlasted the budget.
            MalformedTokenResponse: The answer is not a usable token.
            ConfigurationError: The endpoint redirected.
        """
        policy = self._retry
        url = creds.token_url or ""
        origin = origin_of(url)
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_after_attempt(_testing.attempts or policy.attempts)
            | stop_before_delay(policy.total_timeout),
            wait=_wait(policy, lambda: self._rate_limits.jittered(origin)),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=_count_wait,
            reraise=True,
        )
        attempts = 0
        client = self._client_for(auth) or self._client
        log = AttemptLog()
        attempt_log.set(log)

        async def attempt() -> Token:
            nonlocal attempts
            attempts += 1
            log.attempts = attempts
            for nonce_retry in (False, True):  # RFC 9449 section 8: once more with a nonce
                if self._pace is not None:
                    await self._pace.wait(origin)
                form, headers = build_form(creds, request, auth=auth)  # fresh assertion
                if dpop is not None:
                    headers["DPoP"] = dpop.proof("POST", url)
                try:
                    return await self._attempt(
                        url, form, headers, attempts, dpop=dpop, client=client
                    )
                except TokenRequestRefused as exc:
                    if nonce_retry or dpop is None or exc.error != "use_dpop_nonce":
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

        try:
            with anyio.fail_after(policy.total_timeout):
                return await retrying(attempt)
        except _Retryable as exc:
            raise TokenEndpointUnavailable(
                f"{exc.message} (gave up after {attempts} attempt(s))",
                endpoint=url,
                attempts=attempts,
                status_code=exc.status_code,
                retry_after=exc.retry_after,
            ) from exc
        except TimeoutError as exc:
            raise TokenEndpointUnavailable(
                f"token endpoint {redact_url(url)} gave no token within the retry budget of "
                f"{policy.total_timeout}s ({attempts} attempt(s))",
                endpoint=url,
                attempts=attempts,
            ) from exc

    async def _attempt(
        self,
        url: str,
        form: dict[str, str | list[str]],
        headers: dict[str, str],
        attempt: int,
        *,
        dpop: DPoPProver | None,
        client: httpx.AsyncClient,
    ) -> Token:
        started = self._clock()
        logger.debug(
            "token request to %s (attempt %d)",
            redact_url(url),
            attempt,
            extra={"endpoint_host": endpoint_host(url), "attempt": attempt},
        )
        try:
            # Redirects are refused whatever the client's own setting: they would carry the
            # credentials to another address.
            async with open_stream(
                client, "POST", url, data=form, headers=headers, follow_redirects=False
            ) as response:
                body = await read_bounded(
                    response, limit=MAX_BODY_BYTES, what=f"token endpoint {redact_url(url)}"
                )
        except TRANSPORT_ERRORS as exc:
            raise _Retryable(
                f"could not reach token endpoint {redact_url(url)}: {_describe(exc)}",
                endpoint=url,
            ) from exc
        except DECODING_ERRORS as exc:  # a RequestError, but not a transport one
            raise MalformedTokenResponse(
                f"token endpoint {redact_url(url)} sent a body that could not be decoded: {exc}",
            ) from exc
        if dpop is not None:
            dpop.nonces.observe(url, response.headers)
        types = DPOP_TOKEN_TYPES if dpop is not None else SUPPORTED_TOKEN_TYPES
        return self._interpret(url, response, body, started, token_types=types)

    def _interpret(
        self,
        url: str,
        response: httpx.Response,
        body: bytes,
        started: float,
        *,
        token_types: frozenset[str],
    ) -> Token:
        status = response.status_code
        if 200 <= status < 300:
            token = parse_token_response(
                body,
                status=status,
                started_at=started,
                endpoint=redact_url(url),
                default_lifetime=self._refresh.default_lifetime,
                max_lifetime=self._refresh.max_lifetime,
                token_types=token_types,
            )
            logger.debug("token from %s, lifetime %.0fs", redact_url(url), token.expires_in)
            return token
        if 300 <= status < 400:
            location = redact_url(response.headers.get("location", "(no location)"))
            raise ConfigurationError(
                f"token endpoint {redact_url(url)} answered HTTP {status} redirecting to "
                f"{location!r}; tokenflight does not follow redirects with credentials: set "
                "token_url to the final address"
            )
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:  # an absurd Retry-After is asked again after the cap
                retry_after = min(retry_after, self._retry.max_cooldown)
            # The provider's rate limit covers every tenant on it, not only this one
            # (set_testing(): no waits, hence no cooldowns).
            limited = status == 429 or (status == 503 and retry_after is not None)
            if limited and not _testing.no_wait:
                self._rate_limits.note(url, retry_after, status=status)
            raise _Retryable(
                f"token endpoint {redact_url(url)} answered HTTP {status}",
                endpoint=url,
                status_code=status,
                retry_after=retry_after,
            )
        if 400 <= status < 500:
            raise parse_error(status, body, redact_url(url))
        raise MalformedTokenResponse(
            f"token endpoint {redact_url(url)} answered an unexpected HTTP {status}",
            status_code=status,
        )


def _describe(exc: BaseException) -> str:
    """`Type: text` of an error, with the first underlying cause that says something.

    httpx errors raised under trio often have an empty text (a TLS verification failure is
    only in the chained `ssl.SSLCertVerificationError`).
    """
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp."):
        # httpx-aiohttp maps a refused connection or a dropped one to ConnectTimeout:
        # name aiohttp's own error instead, with its text when that is a sentence.
        text = str(cause)
        readable = text and not text.startswith("<") and len(text) < 300
        return f"{type(cause).__name__}: {text}" if readable else type(cause).__name__
    parts = [type(exc).__name__]
    current: BaseException | None = exc
    for _ in range(6):
        if current is None:
            break
        text = str(current)
        if text:
            if current is not exc:
                parts.append(type(current).__name__)
            parts.append(text)
            break
        current = current.__cause__ or current.__context__
    return ": ".join(parts)
