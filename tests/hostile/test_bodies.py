"""Hostile identity providers: compression bombs, odd encodings, redirects with secrets.

Each attack comes from a tiny raw HTTP server on loopback that answers every request with
the same bytes; the library must answer with a typed error, within a few MB of memory.
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from anyio.from_thread import start_blocking_portal

from helpers import load_benchmark
from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretPost,
    ConfigurationError,
    MalformedTokenResponse,
    RetryPolicy,
    SyncTokenManager,
    TokenEndpointUnavailable,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

hostile = load_benchmark("hostile")
bomb = hostile.bomb
raw_response = hostile.raw_response

SECRET = "hostile-secret-never-sent-away"


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """benchmarks/hostile.py's server, ungated: (its URL, the requests it recorded)."""
    async with hostile.hostile_server(answer) as server:
        yield server.url, server.received


async def peak_growth(action: Callable[[], object]) -> int:
    """Bytes allocated at the peak of `await action()` beyond what was there before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await action()  # type: ignore[misc]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


async def refused_with_growth(credentials: ClientCredentials) -> tuple[Exception, int]:
    """The MalformedTokenResponse of a first get_token, and the peak memory it grew by."""
    errors: list[Exception] = []
    async with TokenManager() as tokens:
        tokens.register("acme", credentials)

        async def fetch() -> None:
            try:
                await tokens.get_token("acme")
            except MalformedTokenResponse as exc:
                errors.append(exc)

        growth = await peak_growth(fetch)
    assert len(errors) == 1
    return errors[0], growth


# Not helpers.creds: the hostile servers here are raw sockets, not a bundled IdP.
def creds(url: str, *, discovered: bool = False) -> ClientCredentials:
    """Credentials for the raw server: its token endpoint, or discovered from it as issuer."""
    if discovered:
        return ClientCredentials(
            issuer=url, client_id="acme", auth=ClientSecret(SECRET), allow_insecure_http=True
        )
    return ClientCredentials(
        token_url=url + "/oauth/token", client_id="acme", auth=ClientSecretBasic(SECRET)
    )


@pytest.mark.parametrize(
    ("decoded_mb", "layers", "encoding"), [(100, 1, "gzip"), (400, 2, "gzip, gzip")]
)
async def test_token_endpoint_compression_bomb_is_refused_within_the_cap(
    decoded_mb, layers, encoding
):
    """A gzip bomb (one or two layers) is a typed error, costing under 5 MB of memory."""
    answer = raw_response(bomb(decoded_mb, layers), headers={"Content-Encoding": encoding})
    async with raw_server(answer) as (url, _):
        error, growth = await refused_with_growth(creds(url))
    assert "over 65536 bytes" in str(error)
    assert growth < 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("gzip, gzip, gzip", "3 content-encoding layers"), ("br", "content-encoding 'br'")],
)
async def test_unread_encodings_are_typed_errors(encoding, message):
    """Three layers, or an encoding tokenflight does not read, is MalformedTokenResponse."""
    answer = raw_response(b"{}", headers={"Content-Encoding": encoding})
    async with raw_server(answer) as (url, _), TokenManager() as tokens:
        tokens.register("acme", creds(url))
        with pytest.raises(MalformedTokenResponse, match=message):
            await tokens.get_token("acme")


async def test_gzip_and_deflate_token_responses_are_read():
    """Honest compressed answers (gzip, and deflate raw or zlib-wrapped) give a token."""
    token = json.dumps({"access_token": "t0k", "token_type": "Bearer", "expires_in": 60})
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bodies = {
        "gzip": gzip.compress(token.encode()),
        "deflate": zlib.compress(token.encode()),
        "Deflate": raw_deflate.compress(token.encode()) + raw_deflate.flush(),
    }
    for encoding, body in bodies.items():
        answer = raw_response(body, headers={"Content-Encoding": encoding})
        async with raw_server(answer) as (url, _), TokenManager() as tokens:
            tokens.register("acme", creds(url))
            assert (await tokens.get_token("acme")).access_token == "t0k"


async def test_discovery_compression_bomb_is_refused_within_the_cap():
    """A discovery document that inflates to 200 MB is a typed error, under 5 MB of memory."""
    answer = raw_response(bomb(200), headers={"Content-Encoding": "gzip"})
    async with raw_server(answer) as (url, _):
        error, growth = await refused_with_growth(creds(url, discovered=True))
    assert "over 262144 bytes" in str(error)
    assert growth < 5 * 1024 * 1024


async def test_deeply_nested_discovery_document_is_a_typed_error():
    """A document nested 100,000 deep is MalformedTokenResponse, not a RecursionError."""
    answer = raw_response(b"[" * 100_000 + b"]" * 100_000, headers={})
    async with raw_server(answer) as (url, _), TokenManager() as tokens:
        tokens.register("acme", creds(url, discovered=True))
        with pytest.raises(MalformedTokenResponse):
            await tokens.get_token("acme")


async def test_redirect_is_refused_even_by_a_client_that_follows_them():
    """With http_client=AsyncClient(follow_redirects=True), a 307 never carries the secret."""
    async with raw_server(raw_response(b"", headers={})) as (target, received):
        answer = raw_response(
            b"", status="307 Temporary Redirect", headers={"Location": target + "/steal"}
        )
        async with (
            raw_server(answer) as (url, _),
            httpx.AsyncClient(follow_redirects=True) as http,
            TokenManager(http_client=http) as tokens,
        ):
            tokens.register(
                "acme",
                ClientCredentials(
                    token_url=url + "/oauth/token",
                    client_id="acme",
                    auth=ClientSecretPost(SECRET),
                ),
            )
            with pytest.raises(ConfigurationError, match="does not follow redirects"):
                await tokens.get_token("acme")
    assert received == []


def amplifying_token_body() -> bytes:
    """A good token response padded to just under 64 KiB with `[[],[],…]`: each 3 bytes
    on the wire is a list object of 56 bytes once parsed."""
    head = b'{"access_token": "t0k", "token_type": "Bearer", "expires_in": 600, "note": "kept", '
    lists = b'"padding": [' + b",".join([b"[]"] * 21_000) + b"]}"
    body = head + lists
    assert len(body) < 65536
    return body


async def test_unknown_fields_of_100_tenants_retain_under_5_mb():
    """Token.extra keeps scalars only: 100 slots of 64 KiB nested-list bodies hold < 5 MB."""
    answer = raw_response(amplifying_token_body(), headers={})
    async with raw_server(answer) as (url, _), TokenManager() as tokens:
        for n in range(101):
            tokens.register(f"t{n}", creds(url))
        await tokens.get_token("t100")  # warm: the client's pool, the parser
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            got = [await tokens.get_token(f"t{n}") for n in range(100)]
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(got) == 100
        assert dict(got[0].extra) == {"note": "kept"}
    assert after - before < 5 * 1024 * 1024


MALFORMED_HTTP = {
    "bad status line": b"HTTP/1.1 two-hundred OK\r\nContent-Length: 2\r\n\r\n{}",
    "header without a colon": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNoColonHere\r\n\r\n{}",
    # aiohttp refuses a header line over 8 KiB; httpcore a head still incomplete at 100 KiB
    "300 KB header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: "
    + b"a" * 300_000
    + b"\r\n\r\n{}",
    "bad chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "overflowing Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: "
    + b"9" * 40
    + b"\r\n\r\n{}",
}


@pytest.mark.parametrize("answer", MALFORMED_HTTP.values(), ids=MALFORMED_HTTP.keys())
async def test_malformed_http_is_a_retried_transport_error(
    answer, no_retry_wait, caplog: pytest.LogCaptureFixture
):
    """A reply that is no valid HTTP is retried, then TokenEndpointUnavailable; on every stack."""
    retry = RetryPolicy(attempts=2)
    async with raw_server(answer) as (url, received), TokenManager(retry=retry) as tokens:
        tokens.register("acme", creds(url))
        with pytest.raises(TokenEndpointUnavailable, match="could not reach") as caught:
            await tokens.get_token("acme")
    assert caught.value.attempts == 2
    assert len(received) == 2
    assert "unexpected" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_4xx_compression_bomb_is_refused_within_the_cap():
    """A 400 whose gzip body inflates to 100 MB is a typed error, costing under 5 MB."""
    answer = raw_response(bomb(100), status="400 Bad Request", headers={"Content-Encoding": "gzip"})
    async with raw_server(answer) as (url, _):
        error, growth = await refused_with_growth(creds(url))
    assert "over 65536 bytes" in str(error)
    assert growth < 5 * 1024 * 1024


def bomb_401() -> bytes:
    """A 401 rejecting the token, its gzip body inflating to 300 MB (300 KB on the wire)."""
    headers = {"Content-Encoding": "gzip", "WWW-Authenticate": 'Bearer error="invalid_token"'}
    answer: bytes = raw_response(bomb(300), status="401 Unauthorized", headers=headers)
    return answer


def idp_creds(idp: IdentityProvider) -> ClientCredentials:
    secret = idp.clients["acme"].secret
    return ClientCredentials(
        token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(secret)
    )


async def test_api_401_compression_bomb_is_not_inflated_before_the_retry(idp):
    """TokenAuth drops a bomb 401's body (64 KiB raw at most) and retries: under 5 MB."""
    statuses: list[int] = []
    async with raw_server(bomb_401()) as (url, received), TokenManager() as tokens:
        tokens.register("acme", idp_creds(idp))
        await tokens.get_token("acme")
        async with tokens.client("acme", base_url=url) as http:

            async def call() -> None:
                response = await http.send(http.build_request("GET", "/thing"), stream=True)
                statuses.append(response.status_code)
                await response.aclose()  # the retry's 401: the caller's to read, or not

            growth = await peak_growth(call)
    assert statuses == [401]
    assert len(received) == 2  # the request, and its retry with a new token
    assert idp.token_requests == 2
    assert growth < 5 * 1024 * 1024


async def test_api_401_compression_bombs_leave_nothing_of_their_bodies_behind(idp):
    """30 bomb 401s dropped by TokenAuth retain under 1 MB once answered (none pins a body)."""
    async with raw_server(bomb_401()) as (url, received), TokenManager() as tokens:
        tokens.register("acme", idp_creds(idp))
        async with tokens.client("acme", base_url=url) as http:

            async def call() -> None:
                response = await http.send(http.build_request("GET", "/thing"), stream=True)
                await response.aclose()

            await call()  # warm: the connection pool, the token
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                for _ in range(30):
                    await call()
                gc.collect()
                after, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert len(received) >= 31
    assert after - before < 1024 * 1024


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_sync_api_401_compression_bomb_is_not_inflated_before_the_retry(module):
    """SyncTokenAuth drops a bomb 401's body the same way: under 5 MB of memory."""
    with start_blocking_portal() as portal:
        idp = IdentityProvider()
        with (
            portal.wrap_async_context_manager(idp),
            portal.wrap_async_context_manager(raw_server(bomb_401())) as (url, received),
            SyncTokenManager() as tokens,
        ):
            idp.add_client("acme", "sync-secret")
            tokens.register("acme", idp_creds(idp))
            tokens.get_token("acme")
            with module.Client(auth=tokens.auth("acme"), base_url=url) as http:
                tracemalloc.start()
                try:
                    before, _ = tracemalloc.get_traced_memory()
                    tracemalloc.reset_peak()
                    with http.stream("GET", "/thing") as response:
                        status = response.status_code
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
    assert status == 401
    assert len(received) == 2
    assert peak - before < 5 * 1024 * 1024
