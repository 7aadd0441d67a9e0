"""Bad token responses: the parser, and the endpoint facing what real servers rarely send."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenflight import (
    ClientSecretBasic,
    ConfigurationError,
    MalformedTokenResponse,
    RefreshPolicy,
    RetryPolicy,
    TokenEndpointUnavailable,
    TokenError,
    TokenRequestRefused,
)
from tokenflight._config import ClientCredentials
from tokenflight._endpoint import MAX_BODY_BYTES, TokenEndpoint, TokenRequest
from tokenflight._token import parse_error, parse_retry_after, parse_token_response

URL = "https://idp.example/oauth/token"
DEFAULT = 300.0
MAXIMUM = 86400.0


def parse(payload: object, **kwargs: float) -> float:
    """Parse a JSON payload started at t=100 and return the lifetime used."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    token = parse_token_response(
        body,
        started_at=100.0,
        endpoint=URL,
        default_lifetime=kwargs.get("default", DEFAULT),
        max_lifetime=kwargs.get("maximum", MAXIMUM),
    )
    assert token.expires_at == token.obtained_at + token.expires_in
    return token.expires_in


def jwt(claims: dict[str, object]) -> str:
    """An unsigned JWT-shaped token carrying `claims`."""

    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


# -- bodies that are not a token ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json at all", "not a JSON object"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "not a JSON object"),
        (b'["access_token", "abc"]', "not a JSON object"),
        (b"\xff\xfe\x00garbage", "not a JSON object"),
        (b"", "not a JSON object"),
        (b'{"token_type": "Bearer", "expires_in": 60}', "without an access_token"),
        (b'{"access_token": "", "token_type": "Bearer"}', "without an access_token"),
        (b'{"access_token": "   ", "token_type": "Bearer"}', "without an access_token"),
        (b'{"access_token": 12345, "token_type": "Bearer"}', "without an access_token"),
    ],
)
def test_unusable_bodies_are_malformed(body, needle):
    """Non-JSON, HTML, arrays, missing/empty/non-string access_token: MalformedTokenResponse."""
    with pytest.raises(MalformedTokenResponse) as info:
        parse_token_response(body, started_at=0.0, endpoint=URL)
    assert needle in str(info.value)
    assert URL in str(info.value)


TOKEN = "tok-" + "a1b2c3d4" * 3


@pytest.mark.parametrize(
    ("access_token", "needle"),
    [
        (TOKEN + "\r" + TOKEN, "a CR (U+000D)"),
        (TOKEN + "\nX-Injected: 1", "an LF (U+000A)"),
        (TOKEN + "\0", "a NUL (U+0000)"),
        (TOKEN + "\x7f", "a DEL (U+007F)"),
        (TOKEN + "\t", "a control character (U+0009)"),
        (TOKEN + "é", "a non-ASCII character (U+00E9)"),
        ("", "without an access_token"),
    ],
)
def test_access_token_outside_vschar_is_refused(access_token, needle):
    """An access_token with CR, LF, NUL, DEL, non-ASCII (or empty) is refused, never quoted."""
    body = json.dumps({"access_token": access_token, "token_type": "Bearer"}).encode()
    with pytest.raises(MalformedTokenResponse) as info:
        parse_token_response(body, started_at=0.0, endpoint=URL)
    message = str(info.value)
    assert needle in message
    assert "access_token" in message
    assert TOKEN not in message


@pytest.mark.parametrize("token_type", ["Bearer\r\n", "Bear\0er", "Bearer\x7f", "Béarer", ""])
def test_token_type_outside_vschar_is_refused(token_type):
    """A token_type with control or non-ASCII characters (or empty) is refused, not quoted."""
    body = json.dumps({"access_token": TOKEN, "token_type": token_type}).encode()
    with pytest.raises(MalformedTokenResponse) as info:
        parse_token_response(body, started_at=0.0, endpoint=URL)
    message = str(info.value)
    assert "token_type" in message
    assert TOKEN not in message
    assert token_type not in message if token_type else "is empty" in message


@pytest.mark.anyio
async def test_token_with_crlf_is_never_cached(idp, no_retry_wait):
    """A token response whose access_token holds CR LF fails the fetch; nothing is cached."""
    from tokenflight import TokenManager
    from tokenflight.testing import Fault

    bad = json.dumps({"access_token": TOKEN + "\r\nX-A: b", "expires_in": 3600}).encode()
    creds = ClientCredentials(
        token_url=idp.token_url,
        client_id="acme",
        auth=ClientSecretBasic(idp.clients["acme"].secret),
    )
    async with TokenManager(retry=RetryPolicy(attempts=1, cooldown=0)) as tokens:
        tokens.register("acme", creds)
        idp.inject(Fault(status=200, body=bad), count=1)
        with pytest.raises(MalformedTokenResponse) as info:
            await tokens.get_token("acme")
        assert TOKEN not in str(info.value)
        assert (await tokens.get_token("acme")).access_token != TOKEN


@pytest.mark.parametrize("token_type", ["MAC", "DPoP", "N_A", 7, None])
def test_token_type_other_than_bearer_is_refused(token_type):
    """A token_type that is not Bearer is a clear MalformedTokenResponse naming the type."""
    body = json.dumps({"access_token": "abc", "token_type": token_type}).encode()
    with pytest.raises(MalformedTokenResponse) as info:
        parse_token_response(body, started_at=0.0, endpoint=URL)
    assert "type" in str(info.value)
    assert "bearer" in str(info.value)


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER"])
def test_bearer_is_case_insensitive(token_type):
    """token_type "bearer" (Dwolla) is accepted like "Bearer", and kept as spelled."""
    body = json.dumps({"access_token": "abc", "token_type": token_type, "expires_in": 60})
    token = parse_token_response(body.encode(), started_at=0.0)
    assert token.token_type == token_type
    assert token.access_token == "abc"


# -- expires_in --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (3600, 3600.0),
        ("3600", 3600.0),
        (" 120 ", 120.0),
        (0.5, 0.5),
        ("1.5", 1.5),
        (0, DEFAULT),
        (-30, DEFAULT),
        ("-30", DEFAULT),
        ("soon", DEFAULT),
        (True, DEFAULT),
        (None, DEFAULT),
        ([60], DEFAULT),
        ("NaN", DEFAULT),
        ("inf", DEFAULT),
        (10**12, MAXIMUM),
        (1e300, MAXIMUM),
        (10**400, MAXIMUM),
    ],
)
def test_expires_in_decisions(expires_in, expected):
    """expires_in: numbers and numeric strings used; unusable → default; huge → max_lifetime."""
    assert parse({"access_token": "opaque", "expires_in": expires_in}) == expected


def test_expires_in_missing_uses_default_lifetime():
    """A response without expires_in and an opaque token gets RefreshPolicy.default_lifetime."""
    assert parse({"access_token": "opaque"}, default=42.0) == 42.0


@pytest.mark.parametrize("expires_in", [None, 0, -5, "x"])
def test_unusable_expires_in_falls_back_to_jwt_exp(expires_in):
    """Missing/zero/negative/garbage expires_in on a JWT with exp uses the exp (about 600 s)."""
    payload: dict[str, object] = {"access_token": jwt({"exp": time.time() + 600})}
    if expires_in is not None:
        payload["expires_in"] = expires_in
    assert 590 <= parse(payload) <= 600


@pytest.mark.parametrize(
    "claims", [{"exp": time.time() - 10}, {"exp": "tomorrow"}, {"exp": 10**400}, {}]
)
def test_jwt_without_usable_exp_uses_default(claims):
    """A JWT whose exp is past, not a number or absurd falls back to the default lifetime."""
    assert parse({"access_token": jwt(claims)}) == DEFAULT


def test_jwt_exp_is_clamped_to_max_lifetime():
    """A JWT exp ten years away is clamped to max_lifetime."""
    assert parse({"access_token": jwt({"exp": time.time() + 10 * 365 * 86400})}) == MAXIMUM


def test_default_policy_values_used_by_parser():
    """RefreshPolicy's defaults are a finite default and a finite cap (never cache forever)."""
    policy = RefreshPolicy()
    assert 0 < policy.default_lifetime <= policy.max_lifetime < float("inf")


# -- error bodies and Retry-After --------------------------------------------------------


def test_error_body_without_error_field():
    """A 4xx with a JSON body lacking `error` is TokenRequestRefused with error=None and a hint."""
    refused = parse_error(400, b'{"message": "nope"}', URL)
    assert isinstance(refused, TokenRequestRefused)
    assert refused.error is None
    assert refused.status_code == 400
    assert "no RFC 6749 error code" in str(refused)


def test_error_body_html():
    """A 4xx with an HTML body is a TokenRequestRefused without an error code."""
    refused = parse_error(403, b"<html>Forbidden</html>", URL)
    assert refused.error is None
    assert refused.status_code == 403


def test_error_body_rfc6749():
    """A 4xx RFC 6749 error body carries error, description and uri."""
    body = b'{"error":"invalid_scope","error_description":"no","error_uri":"https://x"}'
    refused = parse_error(400, body, URL)
    assert (refused.error, refused.error_description, refused.error_uri) == (
        "invalid_scope",
        "no",
        "https://x",
    )
    assert "invalid_scope" in str(refused)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("2", 2.0), (" 7 ", 7.0), ("soon", None), ("²", None), ("-1", None)],
)
def test_retry_after_seconds(value, expected):
    """Retry-After delay-seconds is read; garbage (even Unicode digits) is ignored."""
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    """Retry-After as an HTTP-date is the seconds until then (never negative)."""
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0


# -- the endpoint over a MockTransport ---------------------------------------------------


# Not helpers.creds: no IdP here, the endpoint is an httpx.MockTransport.
def creds() -> ClientCredentials:
    return ClientCredentials(token_url=URL, client_id="acme", auth=ClientSecretBasic("shh"))


def endpoint(handler, *, attempts: int = 1) -> tuple[TokenEndpoint, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    retry = RetryPolicy(attempts=attempts, initial_wait=0, max_wait=0, total_timeout=5)
    ep = TokenEndpoint(
        client,
        retry=retry,
        refresh=RefreshPolicy(),
        clock=anyio.current_time,
        client_for=lambda creds: None,  # no mutual TLS: always the shared client
    )
    return ep, client


REQUEST = TokenRequest(scopes=(), audience=None, resource=None)


class CountingStream(httpx.AsyncByteStream):
    """An endless response body that counts the chunks read from it; closing ends it."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.consumed = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.closed:
            self.consumed += 1
            yield self.chunk

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [True, False])
async def test_body_over_cap_is_refused_without_reading_on(declared):
    """A body over 64 KiB is refused; chunked, no more than the cap (+1 chunk) is read."""
    chunk = b"x" * 1024
    stream = CountingStream(chunk)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(10 * MAX_BODY_BYTES)} if declared else {}
        return httpx.Response(200, headers=headers, stream=stream)

    ep, client = endpoint(handler)
    async with client:
        with pytest.raises(MalformedTokenResponse) as info:
            await ep.fetch(creds(), REQUEST)
    assert "over 65536 bytes" in str(info.value)
    if declared:
        assert stream.consumed == 0
    else:
        assert stream.consumed <= MAX_BODY_BYTES // len(chunk) + 1
    assert stream.closed


@pytest.mark.anyio
async def test_body_at_cap_is_read():
    """A valid token response padded to just under the cap is accepted."""
    body = json.dumps({"access_token": "abc", "pad": ""}).encode()
    body = body.replace(b'""', b'"' + b"p" * (MAX_BODY_BYTES - len(body)) + b'"')
    assert len(body) == MAX_BODY_BYTES
    ep, client = endpoint(lambda request: httpx.Response(200, content=body))
    async with client:
        token = await ep.fetch(creds(), REQUEST)
    assert token.access_token == "abc"


@pytest.mark.anyio
async def test_broken_gzip_body_is_malformed():
    """A body that fails to decode (bad gzip) is MalformedTokenResponse, not an httpx error."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"not gzip")

    ep, client = endpoint(handler)
    async with client:
        with pytest.raises(MalformedTokenResponse):
            await ep.fetch(creds(), REQUEST)


@pytest.mark.anyio
async def test_status_classes():
    """2xx parsed, 3xx ConfigurationError, 4xx refused, 5xx/429 unavailable, 1xx malformed."""
    expected = {
        200: MalformedTokenResponse,  # empty body
        302: ConfigurationError,
        401: TokenRequestRefused,
        429: TokenEndpointUnavailable,
        503: TokenEndpointUnavailable,
        199: MalformedTokenResponse,
    }
    for status, kind in expected.items():
        ep, client = endpoint(lambda request, status=status: httpx.Response(status))
        async with client:
            with pytest.raises(kind):
                await ep.fetch(creds(), REQUEST)


HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["Bearer", "bearer", "MAC", "3600", "-1", "invalid_client"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=8,
)
TOKENISH = st.fixed_dictionaries(
    {},
    optional={
        "access_token": JSONISH | st.just(jwt({"exp": 10**400})) | st.just("abc"),
        "token_type": JSONISH,
        "expires_in": JSONISH,
        "scope": JSONISH,
        "error": JSONISH,
        "error_description": JSONISH,
    },
)
BODIES = (
    st.binary(max_size=200)
    | TOKENISH.map(lambda d: json.dumps(d).encode())
    | JSONISH.map(lambda d: json.dumps(d).encode())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.integers(min_value=100, max_value=599),
    headers=st.dictionaries(
        st.sampled_from(["retry-after", "content-type", "location", "content-encoding", "x-other"]),
        HEADER_TEXT,
    ),
    body=BODIES,
)
def test_anything_the_server_sends_raises_only_token_errors(status, headers, body):
    """Arbitrary status, headers and body through TokenEndpoint: only TokenError escapes."""

    def handler(request: httpx.Request) -> httpx.Response:
        raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        return httpx.Response(status, headers=raw, content=body)

    async def main() -> None:
        ep, client = endpoint(handler, attempts=2)
        async with client:
            try:
                token = await ep.fetch(creds(), REQUEST)
            except TokenError:
                return
        assert 0 < token.expires_in <= MAXIMUM
        assert token.access_token

    anyio.run(main)


@given(body=BODIES, status=st.integers(min_value=200, max_value=499))
def test_parsers_raise_only_token_errors(body, status):
    """parse_token_response and parse_error never raise anything but TokenError."""
    with contextlib.suppress(TokenError):
        parse_token_response(body, started_at=0.0, status=status)
    assert isinstance(parse_error(status, body, URL), TokenRequestRefused)
