"""Admission before the token, tokens that outlive their trip, client(), on httpx and httpx2."""

from __future__ import annotations

import functools
import json
import random

import anyio
import httpx
import httpx2
import pytest
import trio.testing

from helpers import counting_transport
from tokenflight import (
    Admission,
    AdmissionStatistics,
    ClientCredentials,
    ClientSecretBasic,
    ConfigurationError,
    TokenManager,
)
from tokenflight._admission import RequestTimes
from tokenflight._climb import Climb

pytestmark = pytest.mark.anyio

SECRET = "admission-secret-never-shown"


async def wait_for(predicate) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.005)


# -- the gate ---------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_admission_limit_must_be_a_positive_integer(limit):
    """A zero, negative, fractional, boolean or string limit is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="integer >= 1"):
        Admission(limit)


async def test_admission_admits_in_arrival_order():
    """Waiters are admitted first come, first served, one place at a time."""
    gate = Admission(1)
    order: list[int] = []
    first = await gate.acquire()

    async def request(n: int) -> None:
        ticket = await gate.acquire()
        order.append(n)
        gate.release(ticket)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(request, n)
            await wait_for(lambda n=n: gate.statistics().waiting == n + 1)
        assert gate.statistics().admitted == 1
        gate.release(first)
    assert order == list(range(10))
    assert gate.statistics() == AdmissionStatistics(limit=1, current_limit=1, admitted=0, waiting=0)


async def test_token_is_read_only_once_admitted(tokens, idp, http_module):
    """A request waiting for admission has not read (or fetched) its token yet."""
    gate = Admission(1)
    ticket = await gate.acquire()
    async with (
        http_module.AsyncClient(auth=tokens.auth("acme", admission=gate)) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(http.get, idp.resource_url)
        await wait_for(lambda: gate.statistics().waiting == 1)
        assert idp.token_requests == 0
        assert tokens.stats().total.misses == 0
        gate.release(ticket)
    assert idp.token_requests == 1
    assert idp.resource_requests == 1
    assert gate.statistics().admitted == 0


async def test_client_never_queues_in_its_pool(tokens, idp, http_module):
    """200 concurrent calls through client() reach the pool at most max_connections at once."""
    transport = counting_transport(http_module)
    limits = http_module.Limits(max_connections=3, max_keepalive_connections=3)
    statuses: list[int] = []
    async with tokens.client("acme", limits=limits, transport=transport) as http:

        async def call() -> None:
            statuses.append((await http.get(idp.resource_url)).status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(call)
    assert statuses == [200] * 200
    assert transport.peak == 3
    assert idp.token_requests == 1


async def test_auth_objects_share_one_admission(tokens, idp, http_module):
    """Two tenants' auth() given one gate never have more requests out than its limit."""
    idp.add_client("globex", SECRET)
    tokens.register(
        "globex",
        ClientCredentials(
            token_url=idp.token_url, client_id="globex", auth=ClientSecretBasic(SECRET)
        ),
    )
    gate = Admission(2)
    transport = counting_transport(http_module)
    auths = [tokens.auth("acme", admission=gate), tokens.auth("globex", admission=gate)]
    async with (
        http_module.AsyncClient(transport=transport) as http,
        anyio.create_task_group() as tg,
    ):
        for n in range(40):
            tg.start_soon(functools.partial(http.get, idp.resource_url, auth=auths[n % 2]))
    assert transport.peak == 2
    assert idp.resource_requests == 40
    assert idp.resource_rejections == 0


async def test_cancelled_requests_give_their_place_back(idp, http_module):
    """Cancelling a request waiting for a place or fetching its token frees the gate."""
    idp.latency = 30.0  # the token request never answers within the test
    gate = Admission(1)
    async with TokenManager() as tokens:
        tokens.register(
            "acme",
            ClientCredentials(
                token_url=idp.token_url,
                client_id="acme",
                auth=ClientSecretBasic(idp.clients["acme"].secret),
            ),
        )
        async with (
            http_module.AsyncClient(auth=tokens.auth("acme", admission=gate)) as http,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(http.get, idp.resource_url)  # admitted, waits for its token
            await wait_for(lambda: gate.statistics().admitted == 1)
            tg.start_soon(http.get, idp.resource_url)  # waits for a place
            await wait_for(lambda: gate.statistics().waiting == 1)
            tg.cancel_scope.cancel()
    assert gate.statistics().admitted == 0
    assert gate.statistics().waiting == 0


async def test_failed_request_gives_its_place_back(tokens, http_module):
    """A request whose connection is refused raises, and leaves the gate empty."""
    from helpers import closed_port_url

    gate = Admission(1)
    async with http_module.AsyncClient(auth=tokens.auth("acme", admission=gate)) as http:
        for _ in range(3):  # a leaked place would block the second one forever
            with anyio.fail_after(5), pytest.raises(http_module.ConnectError):
                await http.get(closed_port_url())
    assert gate.statistics().admitted == 0


# -- retries never reuse a rejected token -------------------------------------------------


async def test_retry_never_resends_the_rejected_token(tokens, idp, http_module):
    """When the provider hands back the token just rejected, the 401 stands: no resend."""
    idp.reuse_tokens = True
    seen: list[str] = []

    def resource(request):
        seen.append(request.headers["authorization"])
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return http_module.Response(401, headers=challenge, json={"error": "invalid_token"})

    transport = http_module.MockTransport(resource)
    async with http_module.AsyncClient(transport=transport, auth=tokens.auth("acme")) as http:
        response = await http.get("https://api.example/orders")
    assert response.status_code == 401
    assert len(seen) == 1
    assert idp.token_requests == 2  # the rejected token was dropped and asked for again


# -- tokens outlive their trip -----------------------------------------------------------


def test_request_times_follow_a_high_percentile():
    """The estimate starts at the first sample, settles near p99, and decays when load eases."""
    times = RequestTimes()
    times.observe(0.5)
    assert times.margin == 0.5
    samples = [0.01] * 99 + [0.2]  # p99 of this mix is 0.2 s at most
    for _ in range(50):
        for sample in samples:
            times.observe(sample)
    assert 0.01 < times.margin <= 0.2
    for _ in range(5000):
        times.observe(0.001)
    assert times.margin < 0.01
    slow = times.margin
    for _ in range(100):
        times.observe(1.0)
    assert times.margin > 50 * slow  # follows a slowdown within a hundred requests


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
)
async def test_tokens_handed_to_requests_outlive_the_trip():
    """Requests that take 1.2 s never carry a 2 s token that lapses before they are served.

    On trio's MockClock, with the token endpoint and the resource in memory: the resource
    checks the token when it answers, 1.2 s after the request left.
    """
    issued: dict[str, float] = {}
    expired: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            token = f"tok-{len(issued)}"
            issued[token] = anyio.current_time() + 2.0
            body = {"access_token": token, "token_type": "Bearer", "expires_in": 2}
            return httpx.Response(200, content=json.dumps(body).encode())
        await anyio.sleep(1.2)
        token = request.headers["authorization"].removeprefix("Bearer ")
        if anyio.current_time() >= issued[token]:
            expired.append(token)
            return httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    async with (
        httpx.AsyncClient(transport=transport) as idp_http,
        TokenManager(http_client=idp_http) as tokens,
    ):
        creds = ClientCredentials(
            token_url="http://127.0.0.1/token", client_id="acme", auth=ClientSecretBasic(SECRET)
        )
        tokens.register("acme", creds)
        async with httpx.AsyncClient(transport=transport, auth=tokens.auth("acme")) as http:
            statuses = [(await http.get("http://127.0.0.1/api")).status_code for _ in range(6)]
    assert statuses == [200] * 6
    assert expired == []


# -- client() ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "cls"), [("httpx", httpx.AsyncClient), ("httpx2", httpx2.AsyncClient)]
)
async def test_client_is_of_the_asked_stack_with_matching_admission(tokens, idp, stack, cls):
    """client(stack=) builds that library's client; its admission follows max_connections."""
    limits = httpx.Limits(max_connections=7, max_keepalive_connections=7)
    async with tokens.client("acme", stack=stack, limits=limits) as http:
        assert type(http) is cls
        assert http.auth.admission.limit == 7
        assert not http.follow_redirects
        assert (await http.get(idp.resource_url)).status_code == 200


async def test_client_takes_a_shared_admission(tokens, idp):
    """client(admission=) uses the given gate instead of one of its own."""
    gate = Admission(3)
    async with tokens.client("acme", admission=gate) as http:
        assert http.auth.admission is gate


async def test_client_refuses_auth_and_unknown_stacks(tokens):
    """auth= in client() and an unknown stack are ConfigurationErrors that say what to do."""
    with pytest.raises(ConfigurationError, match="sets auth= itself"):
        tokens.client("acme", auth=("user", "pass"))
    with pytest.raises(ConfigurationError, match="unknown HTTP stack 'curl'"):
        tokens.client("acme", stack="curl")


def test_manager_refuses_an_unknown_stack(monkeypatch):
    """TokenManager(http=) and $TOKENFLIGHT_HTTP accept only the known stacks."""
    with pytest.raises(ConfigurationError, match="unknown HTTP stack"):
        TokenManager(http="requests")  # type: ignore[arg-type]
    monkeypatch.setenv("TOKENFLIGHT_HTTP", "urllib3")
    with pytest.raises(ConfigurationError, match="TOKENFLIGHT_HTTP"):
        TokenManager()


# -- how many at once: slow start, then hill climbing ------------------------------------


def simulate(rate_of, *, limit: int = 100, answers: int = 20_000) -> tuple[float, list[int]]:
    """Feed a Climb answers arriving at `rate_of(current)` per second, with 5% noise.

    Returns the mean answer rate over the run and the limits of its second half.
    """
    noise = random.Random(7)
    climb, now, late = Climb(limit), 0.0, []
    for n in range(answers):
        now += 1.0 / (rate_of(climb.current) * noise.uniform(0.95, 1.05))
        climb.observe(now, lambda: True)
        if n >= answers // 2:
            late.append(climb.current)
    return answers / now, late


def test_climb_grows_to_the_pool_for_a_slow_remote_api():
    """A 50 ms API: the rate grows with each request admitted, so the limit climbs high."""
    mean, late = simulate(lambda n: n / 0.05)
    assert min(late) >= 50
    assert mean > 0.6 * 100 / 0.05


def test_climb_keeps_few_requests_out_when_more_only_slow_the_client():
    """A CPU-bound client whose rate falls past 4 at once settles near 4, not at the pool."""
    mean, late = simulate(lambda n: 600 - 40 * abs(n - 4))
    assert max(late) <= 10
    assert mean > 0.8 * 600


def test_climb_stays_on_a_plateau():
    """A rate that is flat from 10 to 40 at once and falls after: the limit stays near it."""
    mean, late = simulate(lambda n: 100 * min(n, 10) - 10 * max(0, n - 40))
    assert 10 <= sorted(late)[len(late) // 2] <= 45
    assert mean > 0.85 * 1000


def test_climb_does_not_learn_from_an_idle_gate():
    """With nobody waiting at the gate, the rate measures demand: the limit is left alone."""
    climb = Climb(100)
    for n in range(10_000):
        assert not climb.observe(n * 0.01, lambda: False)
    assert climb.current == 4


async def test_adaptive_admission_starts_small_and_a_fixed_one_at_its_limit():
    """Admission(n) admits 4 at first and grows on evidence; adaptive=False admits n."""
    assert Admission(100).statistics().current_limit == 4
    assert Admission(3).statistics().current_limit == 3
    assert Admission(100, adaptive=False).statistics().current_limit == 100


@pytest.mark.parametrize("min_ttl", [-1.0, float("nan")])
async def test_min_ttl_must_be_a_non_negative_number(tokens, min_ttl):
    """A negative or NaN min_ttl is a ConfigurationError, never an expired or refetched token."""
    await tokens.get_token("acme")
    with pytest.raises(ConfigurationError, match="min_ttl"):
        await tokens.get_token("acme", min_ttl=min_ttl)
