"""No secret in the locals of a traceback, as error reporters (Sentry) record them.

Every error a token fetch can raise, for each client-authentication method, is formatted
with `traceback.TracebackException.from_exception(exc, capture_locals=True)` (which walks
`__cause__` and `__context__`); the output must name the underlying error but show no
client secret, Basic credential, client assertion, private key or access token.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import traceback
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import anyio.abc
import httpx
import pytest
from joserfc.jwk import RSAKey

from helpers import closed_port_url, load_benchmark
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    PrivateKeyJWT,
    RefreshPolicy,
    RetryPolicy,
    TokenError,
    TokenManager,
)
from tokenflight._endpoint import TokenEndpoint, TokenRequest
from tokenflight._http import DEFAULT_TIMEOUT, resolve_stack
from tokenflight._http import make_client as make_http_client
from tokenflight._redact import exception_chain
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, total_timeout=10, cooldown=0)
#: A signed JWT in compact form (client assertions, DPoP proofs, JWT access tokens).
JWS = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
SECRET_METHODS: dict[str, type[ClientSecretBasic | ClientSecretPost | ClientSecretJWT]] = {
    "client_secret_basic": ClientSecretBasic,
    "client_secret_post": ClientSecretPost,
    "client_secret_jwt": ClientSecretJWT,
}
METHODS = [*SECRET_METHODS, "private_key_jwt"]
PLANTED = "PLANTED-" + secrets.token_hex(12)


@functools.cache
def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


def formatted(exc: BaseException) -> str:
    """What an error reporter records: the whole chain, with every frame's locals."""
    report = traceback.TracebackException.from_exception(exc, capture_locals=True)
    return "".join(report.format())


async def failure(call: Awaitable[Any]) -> BaseException:
    """The error `call` raises, caught in a frame that holds no secret of its own."""
    try:
        await call
    except Exception as exc:
        return exc
    raise AssertionError("the call succeeded")


@dataclass
class Client:
    """One client's configuration and every spelling of its secrets."""

    creds: ClientCredentials
    needles: list[str]


def make_client(idp: IdentityProvider, method: str, token_url: str, *, wrong: bool) -> Client:
    """A client of `idp` authenticating with `method` (with bad credentials when `wrong`)."""
    if method == "private_key_jwt":
        idp.add_client("acme", public_key=rsa_key("good").as_dict(private=False))
        key = rsa_key("bad" if wrong else "good")
        pem = key.as_pem(private=True).decode()
        lines = [line for line in pem.splitlines() if not line.startswith("-----")]
        creds = ClientCredentials(token_url=token_url, client_id="acme", auth=PrivateKeyJWT(pem))
        return Client(creds, [line for line in lines if len(line) > 16])
    secret = "S3CR3T-" + secrets.token_hex(20)
    idp.add_client("acme", secret)
    if wrong:
        secret += "-wrong"
    auth = SECRET_METHODS[method](secret)
    creds = ClientCredentials(token_url=token_url, client_id="acme", auth=auth)
    basic = base64.b64encode(f"acme:{quote(secret, safe='')}".encode()).decode()
    return Client(creds, [secret, quote_plus(secret), quote(secret, safe=""), basic, basic[:24]])


# Each scenario: a fault the IdP answers every request with (or None), whether the
# credentials are wrong, whether the token URL refuses connections, the error type the
# formatted chain names.
# (aiohttp's transport names its own errors: ClientConnectorError, ServerDisconnectedError.)
CONNECT = "ConnectError|ClientConnectorError"
SCENARIOS: dict[str, tuple[Fault | None, bool, bool, str]] = {
    "connection-refused": (None, False, True, CONNECT),
    "closes-at-once": (Fault(drop=True), False, False, "RemoteProtocolError|ServerDisconnected"),
    "closes-mid-way": (Fault(status=200, drop=True), False, False, "Error"),
    "5xx-exhausted": (Fault(status=503), False, False, "TokenEndpointUnavailable"),
    "429-exhausted": (
        Fault(status=429, headers={"Retry-After": "0"}),
        False,
        False,
        "TokenEndpointUnavailable",
    ),
    "invalid-client": (None, True, False, "TokenRequestRefused"),
    "unsupported-token-type": (
        Fault(
            status=200,
            body=json.dumps(
                {"access_token": PLANTED, "token_type": "MAC", "expires_in": "soon"}
            ).encode(),
        ),
        False,
        False,
        "MalformedTokenResponse",
    ),
    "invalid-json": (
        Fault(status=200, body=b'{"access_token":"%s", "expires_in": x' % PLANTED.encode()),
        False,
        False,
        "MalformedTokenResponse",
    ),
    "too-big": (
        Fault(status=200, body=json.dumps({"access_token": PLANTED, "p": "x" * 70000}).encode()),
        False,
        False,
        "MalformedTokenResponse",
    ),
    "token-with-crlf": (
        Fault(status=200, body=json.dumps({"access_token": PLANTED + "\r\nX-A: b"}).encode()),
        False,
        False,
        "MalformedTokenResponse",
    ),
}


def holders(exc: BaseException, needles: list[str]) -> list[str]:
    """`file:function:local` of every frame local in the chain whose repr holds a needle."""
    found: list[str] = []
    for current in exception_chain(exc):
        for frame, _ in traceback.walk_tb(current.__traceback__):
            for name, value in frame.f_locals.items():
                text = repr(value)
                if any(n in text for n in needles) or JWS.search(text):
                    code = frame.f_code
                    found.append(f"{code.co_filename.split('/')[-1]}:{code.co_name}:{name}")
    return found


def assert_clean(exc: BaseException, needles: list[str], names: str) -> None:
    """The formatted chain names one of `names` (`|`-separated) and shows no needle."""
    text = formatted(exc)
    assert any(name in text for name in names.split("|")), text[-2000:]
    leaks = [needle[:12] for needle in needles if needle in text]
    assert not leaks, holders(exc, needles)
    assert not JWS.search(text), holders(exc, needles)


async def endpoint_failure(creds: ClientCredentials) -> BaseException:
    """The error of a fetch straight through `TokenEndpoint` (its traceback unshortened)."""
    stack = resolve_stack("auto")
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with make_http_client(stack, limits=limits, timeout=DEFAULT_TIMEOUT) as http:
        endpoint = TokenEndpoint(
            http,
            retry=RETRY,
            refresh=RefreshPolicy(),
            clock=anyio.current_time,
            client_for=lambda _: None,
        )
        request = TokenRequest(scopes=(), audience=None, resource=None)
        return await failure(endpoint.fetch(creds, request))


@pytest.mark.parametrize("via", ["manager", "endpoint"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_fetch_errors_hold_no_secret_in_traceback_locals(
    method: str, scenario: str, via: str, no_retry_wait: None
) -> None:
    """Every token-fetch error, formatted with locals, shows no secret, assertion or token."""
    fault, wrong, refused, names = SCENARIOS[scenario]
    async with IdentityProvider() as idp:
        url = closed_port_url() if refused else idp.token_url
        client = make_client(idp, method, url, wrong=wrong)
        if fault is not None:
            idp.inject(fault, count=None)
        if via == "endpoint":
            exc = await endpoint_failure(client.creds)
        else:
            async with TokenManager(retry=RETRY) as tm:
                tm.register("acme", client.creds)
                exc = await failure(tm.get_token("acme"))
    assert isinstance(exc, TokenError)
    assert_clean(exc, [*client.needles, PLANTED], names)


async def test_read_timeout_holds_no_secret_in_traceback_locals(no_retry_wait: None) -> None:
    """A read timeout, formatted with locals, shows neither the secret nor the Basic value."""
    retry = RetryPolicy(attempts=1, total_timeout=30)
    async with IdentityProvider() as idp:
        client = make_client(idp, "client_secret_basic", idp.token_url, wrong=False)
        idp.inject(Fault(delay=60), count=None)
        async with TokenManager(retry=retry, timeout=httpx.Timeout(0.05)) as tm:
            tm.register("acme", client.creds)
            exc = await failure(tm.get_token("acme"))
    assert isinstance(exc, TokenError)
    assert_clean(exc, client.needles, "ReadTimeout|SocketTimeoutError")


@pytest.fixture
async def dropping_api() -> AsyncIterator[str]:
    """An API on loopback that reads a request and closes the connection unanswered."""
    async with load_benchmark("hostile").hostile_server(b"") as server:  # answers nothing
        yield server.url + "/api"


@pytest.mark.parametrize("via", ["client", "auth"])
@pytest.mark.parametrize("api", ["refused", "drops"])
async def test_api_errors_hold_no_access_token_in_traceback_locals(
    tokens: TokenManager, http_module: Any, dropping_api: str, via: str, api: str
) -> None:
    """An API call through TokenAuth that fails shows no access token in traceback locals."""
    token = await tokens.get_token("acme")
    url = closed_port_url() if api == "refused" else dropping_api
    if via == "client":
        http = tokens.client("acme")
    else:
        http = http_module.AsyncClient(auth=tokens.auth("acme"))
    async with http:
        exc = await failure(http.get(url))
    name = CONNECT if api == "refused" else "Error"
    assert_clean(exc, [token.access_token], name)
