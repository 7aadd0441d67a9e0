"""Transport security: https required off loopback, TLS certificates verified by default."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest
import trustme
from anyio.streams.tls import TLSListener

from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ConfigurationError,
    RetryPolicy,
    TokenEndpointUnavailable,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

SECRET = "s3cret-tls"
RETRY = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, total_timeout=5)


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/oauth/token",
        "http://127.0.0.1:8080/oauth/token",
        "http://127.8.9.10/oauth/token",
        "http://localhost/oauth/token",
        "http://[::1]:9000/oauth/token",
    ],
)
def test_https_or_loopback_is_accepted(url):
    """https anywhere, and plain http on loopback addresses, are accepted."""
    assert (
        ClientCredentials(token_url=url, client_id="a", auth=ClientSecretBasic("b")).token_url
        == url
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example/oauth/token",
        "http://10.0.0.1/oauth/token",
        "http://localhost.evil.example/oauth/token",
        "http://127.0.0.1.nip.io/oauth/token",
        "ftp://idp.example/token",
        "idp.example/token",
    ],
)
def test_plain_http_off_loopback_is_refused(url):
    """Plain http to a non-loopback host (or a non-http URL) is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        ClientCredentials(token_url=url, client_id="a", auth=ClientSecretBasic("b"))


def test_plain_http_opt_out():
    """allow_insecure_http=True is the explicit opt-out for plain http on a trusted network."""
    url = "http://idp.internal/oauth/token"
    creds = ClientCredentials(
        token_url=url, client_id="a", auth=ClientSecretBasic("b"), allow_insecure_http=True
    )
    assert creds.token_url == url


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_front(idp: IdentityProvider, ca: trustme.CA) -> AsyncIterator[str]:
    """A TLS-terminating proxy on loopback in front of the bundled IdP; yields its token URL."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    port = int(idp.url.rsplit(":", 1)[1])

    async def relay(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        finally:
            await sink.aclose()

    async def handle(client: anyio.abc.ByteStream) -> None:
        async with (
            client,
            await anyio.connect_tcp("127.0.0.1", port) as upstream,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(relay, client, upstream)
            tg.start_soon(relay, upstream, client)

    async def guarded(client: anyio.abc.ByteStream) -> None:
        # A client that refuses our certificate makes the handshake fail here too.
        with contextlib.suppress(anyio.BrokenResourceError, ssl.SSLError, OSError):
            await handle(client)

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = TLSListener(tcp, server_context, standard_compatible=False)
    front_port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, guarded)
        try:
            yield f"https://localhost:{front_port}{idp.profile.token_path}"
        finally:
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_untrusted_certificate_is_refused(ca):
    """TLS is verified by default: an unknown CA gives TokenEndpointUnavailable (verify failed)."""
    async with IdentityProvider() as idp, tls_front(idp, ca) as url:
        idp.add_client("acme", SECRET)
        async with TokenManager(retry=RETRY) as tm:
            tm.register(
                "acme",
                ClientCredentials(token_url=url, client_id="acme", auth=ClientSecretBasic(SECRET)),
            )
            with anyio.fail_after(5), pytest.raises(TokenEndpointUnavailable) as info:
                await tm.get_token("acme")
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
        cause = info.value.__cause__
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert idp.token_requests == 0


@pytest.mark.anyio
async def test_trusted_certificate_is_accepted(ca):
    """With the CA trusted through http_client=AsyncClient(verify=context), a token is issued."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with (
        IdentityProvider() as idp,
        tls_front(idp, ca) as url,
        httpx.AsyncClient(verify=context) as client,
        TokenManager(retry=RETRY, http_client=client) as tm,
    ):
        idp.add_client("acme", SECRET)
        tm.register(
            "acme",
            ClientCredentials(token_url=url, client_id="acme", auth=ClientSecretBasic(SECRET)),
        )
        with anyio.fail_after(5):
            token = await tm.get_token("acme")
        assert token.access_token
        assert idp.token_requests == 1
