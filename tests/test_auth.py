"""The httpx.Auth adapter: Bearer header, precise 401 handling, one retry, sync refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import httpx
import pytest

from tokenflight import Admission, TokenManager
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-value-never-shown"
URL = "https://api.example/"
INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class ShiftedClock:
    """The loop's clock plus an offset, so a test can make the IdP see its tokens expire."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return anyio.current_time() + self.offset


@pytest.fixture
async def clock() -> ShiftedClock:
    return ShiftedClock()


# Not conftest's idp: this one runs on the test's `clock`, which the expiry tests move.
@pytest.fixture
async def idp(clock) -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(clock=clock) as server:
        server.add_client("acme", SECRET)
        yield server


def bearer(request: httpx.Request) -> str:
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return value


# -- the flow driven by hand -----------------------------------------------------------


async def test_flow_adds_bearer_header(tokens, idp, http_module):
    """The flow sends the manager's token as a Bearer header and stops on success."""
    flow = tokens.auth("acme").async_auth_flow(http_module.Request("GET", "https://api.example/x"))
    request = await flow.__anext__()
    assert bearer(request) == (await tokens.get_token("acme")).access_token
    with pytest.raises(StopAsyncIteration):
        await flow.asend(http_module.Response(200, request=request))
    assert idp.token_requests == 1


async def test_flow_retries_once_on_401(tokens, idp, http_module):
    """A 401 invalid_token invalidates the token and re-sends once with a new one."""
    flow = tokens.auth("acme").async_auth_flow(http_module.Request("GET", "https://api.example/x"))
    request = await flow.__anext__()
    old = bearer(request)
    retried = await flow.asend(http_module.Response(401, headers=INVALID, request=request))
    new = bearer(retried)
    assert new != old
    assert idp.token_requests == 2
    with pytest.raises(StopAsyncIteration):  # a second 401 is handed back, not retried again
        await flow.asend(http_module.Response(401, headers=INVALID, request=retried))
    assert idp.token_requests == 2


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (403, {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}),
        (401, {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="admin"'}),
        (500, {}),
    ],
)
async def test_flow_does_not_retry_other_failures(tokens, idp, status, headers, http_module):
    """403, 401 insufficient_scope and 5xx end the flow and keep the cached token."""
    flow = tokens.auth("acme").async_auth_flow(http_module.Request("GET", "https://api.example/x"))
    request = await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(http_module.Response(status, headers=headers, request=request))
    assert idp.token_requests == 1
    assert (await tokens.get_token("acme")).access_token == bearer(request)


async def test_flow_retry_only_if_rejected_token_is_current(tokens, idp, http_module):
    """Two flows rejected with the same old token cause one new token request between them."""
    auth = tokens.auth("acme")
    async with (
        aclosing(auth.async_auth_flow(http_module.Request("GET", URL + "1"))) as first,
        aclosing(auth.async_auth_flow(http_module.Request("GET", URL + "2"))) as second,
    ):
        r1 = await first.__anext__()
        r2 = await second.__anext__()
        old = bearer(r1)
        assert bearer(r2) == old
        again1 = await first.asend(http_module.Response(401, headers=INVALID, request=r1))
        again2 = await second.asend(http_module.Response(401, headers=INVALID, request=r2))
        assert bearer(again1) == bearer(again2) != old
    assert idp.token_requests == 2


async def test_500_concurrent_401s_cause_one_new_token(tokens, idp, http_module):
    """500 flows rejected concurrently for the same old token cause exactly one token request."""
    auth = tokens.auth("acme", admission=Admission(1000, adaptive=False))  # all hold a place
    flows = [auth.async_auth_flow(http_module.Request("GET", f"{URL}{n}")) for n in range(500)]
    sent = [await flow.__anext__() for flow in flows]
    old = bearer(sent[0])
    retried: list[str] = []

    async def reject(flow, request) -> None:
        again = await flow.asend(http_module.Response(401, headers=INVALID, request=request))
        retried.append(bearer(again))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for flow, request in zip(flows, sent, strict=True):
                tg.start_soon(reject, flow, request)
    assert len(retried) == 500
    assert len(set(retried)) == 1
    assert retried[0] != old
    assert idp.token_requests == 2
    for flow in flows:
        await flow.aclose()


async def test_flow_does_not_retry_streamed_body(tokens, idp, http_module):
    """A request with a streamed (non-replayable) body gets its 401 back without a retry."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    request = http_module.Request("POST", "https://api.example/upload", content=body())
    flow = tokens.auth("acme").async_auth_flow(request)
    sent = await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(http_module.Response(401, headers=INVALID, request=sent))
    assert idp.token_requests == 1


# -- through a real client -------------------------------------------------------------


async def test_client_gets_resource_with_token(tokens, idp, http_module):
    """http_module.AsyncClient(auth=...) reaches the protected resource with one token request."""
    async with http_module.AsyncClient(auth=tokens.auth("acme")) as http:
        for _ in range(5):
            response = await http.get(idp.resource_url)
            assert response.status_code == 200
            assert response.json()["client_id"] == "acme"
    assert idp.token_requests == 1
    assert idp.resource_rejections == 0


async def test_client_recovers_from_401(tokens, idp, clock, http_module):
    """When the IdP no longer accepts the cached token, one 401 leads to a new token and a 200."""
    async with http_module.AsyncClient(auth=tokens.auth("acme")) as http:
        assert (await http.get(idp.resource_url)).status_code == 200
        clock.offset = 7200  # the IdP now sees the cached token as expired
        response = await http.get(idp.resource_url)
    assert response.status_code == 200
    assert idp.resource_rejections == 1
    assert idp.token_requests == 2


async def test_client_does_not_retry_403(tokens, idp, http_module):
    """A 403 from the resource is returned as is, with no new token and no second request."""
    async with http_module.AsyncClient(auth=tokens.auth("acme")) as http:
        response = await http.get(idp.url + "/api/forbidden")
    assert response.status_code == 403
    assert idp.resource_requests == 1
    assert idp.token_requests == 1


async def test_client_does_not_retry_insufficient_scope(tokens, idp, http_module):
    """A 401 with error="insufficient_scope" (from a mock API) is returned without a retry."""
    calls = 0

    def api(request):
        nonlocal calls
        calls += 1
        challenge = {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="admin"'}
        return http_module.Response(401, headers=challenge)

    transport = http_module.MockTransport(api)
    async with http_module.AsyncClient(auth=tokens.auth("acme"), transport=transport) as http:
        response = await http.get("https://api.example/admin")
    assert response.status_code == 401
    assert calls == 1
    assert idp.token_requests == 1


async def test_burst_of_401s_causes_one_new_token(tokens, idp, clock, http_module):
    """100 concurrent client requests rejected for the same old token cause one token request."""
    statuses: list[int] = []
    async with http_module.AsyncClient(
        auth=tokens.auth("acme"), limits=http_module.Limits(max_connections=20)
    ) as http:
        await tokens.get_token("acme")
        clock.offset = 7200

        async def call() -> None:
            statuses.append((await http.get(idp.resource_url)).status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(call)
    assert statuses == [200] * 100
    assert idp.token_requests == 2
    assert idp.resource_rejections >= 1


async def test_client_streamed_body_gets_401_back(tokens, idp, clock, http_module):
    """A streamed upload rejected with 401 is not re-sent: the caller sees the 401."""

    async def body() -> AsyncIterator[bytes]:
        yield b"part one,"
        yield b"part two"

    async with http_module.AsyncClient(auth=tokens.auth("acme")) as http:
        await tokens.get_token("acme")
        clock.offset = 7200
        response = await http.post(idp.resource_url, content=body())
    assert response.status_code == 401
    assert idp.resource_requests == 1
    assert idp.token_requests == 1


def test_sync_client_is_refused():
    """httpx.Client(auth=...) raises a RuntimeError that points to AsyncClient."""
    auth = TokenManager().auth("acme")
    with httpx.Client(auth=auth) as http, pytest.raises(RuntimeError, match="AsyncClient"):
        http.get("https://api.example/x")


def test_auth_repr_holds_no_secret():
    """TokenAuth's repr names the tenant and holds neither token nor secret."""
    auth = TokenManager().auth("acme", audience="https://api.example")
    assert "acme" in repr(auth)
    assert SECRET not in repr(auth)


async def test_each_auth_sends_its_own_keys_token(tokens, idp, http_module):
    """auth() objects of one tenant send the token of their own scopes and audience, one
    token request per key however it is spelled (their keys are normalized once)."""
    reads = tokens.auth("acme", scopes=["read"])
    both = tokens.auth("acme", scopes="write read")
    same = tokens.auth("acme", scopes=("read", "write"))
    api = tokens.auth("acme", audience="https://api.example")
    async with http_module.AsyncClient() as client:
        sent = {}
        for name, auth in (("reads", reads), ("both", both), ("same", same), ("api", api)):
            response = await client.get(idp.resource_url, auth=auth)
            assert response.status_code == 200
            sent[name] = response.request.headers["authorization"]
    assert sent["both"] == sent["same"]
    assert len({sent["reads"], sent["both"], sent["api"]}) == 3
    expected = await tokens.get_token("acme", scopes=["write", "read"])
    assert sent["both"] == f"Bearer {expected.access_token}"
    assert idp.token_requests == 3
    assert [r.audience for r in idp.requests] == [None, None, "https://api.example"]
