"""The bundled identity provider's control endpoints (``admin=True``), used by the benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tokenflight._cli import _parser
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio

GRANT = {"grant_type": "client_credentials"}


# Not conftest's idp: the admin endpoints are on (admin=True).
@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(admin=True) as server:
        server.add_client("acme", "s3cret")
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_admin_endpoints_are_off_by_default(http):
    """Without admin=True, /_admin/ paths are unknown (404) and change nothing."""
    async with IdentityProvider() as idp:
        assert (await http.get(idp.url + "/_admin/stats")).status_code == 404
        assert (await http.post(idp.url + "/_admin/reset")).status_code == 404


async def test_stats_report_counters_and_records(idp, http):
    """GET /_admin/stats returns the counters; ?records=1 adds [time, status] per request."""
    await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))
    await http.post(idp.token_url, data=GRANT, auth=("acme", "wrong"))
    stats = (await http.get(idp.url + "/_admin/stats")).json()
    assert stats["token_requests"] == 2
    assert stats["connections"] == 1
    assert "records" not in stats
    records = (await http.get(idp.url + "/_admin/stats?records=1")).json()["records"]
    assert [status for _, status in records] == [200, 401]
    assert all(time <= stats["now"] for time, _ in records)


async def test_reset_zeroes_counters_and_clears_faults(idp, http):
    """POST /_admin/reset zeroes the counters and forgets injected faults."""
    await http.post(idp.url + "/_admin/fault", json={"status": 503, "count": 5})
    await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))
    assert (await http.post(idp.url + "/_admin/reset")).status_code == 200
    assert idp.token_requests == 0
    response = await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))
    assert response.status_code == 200


async def test_fault_is_injected_for_count_requests(idp, http):
    """POST /_admin/fault queues a Fault (status, headers) for `count` token requests."""
    fault = {"status": 429, "headers": {"Retry-After": "1"}, "count": 2}
    assert (await http.post(idp.url + "/_admin/fault", json=fault)).status_code == 200
    statuses = []
    for _ in range(3):
        response = await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))
        statuses.append((response.status_code, response.headers.get("retry-after")))
    assert statuses == [(429, "1"), (429, "1"), (200, None)]


async def test_dropped_connection_fault(idp, http):
    """A {"drop": true} fault closes the connection without an answer."""
    await http.post(idp.url + "/_admin/fault", json={"drop": True})
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))


async def test_clients_are_added_in_bulk(idp, http):
    """POST /_admin/clients registers clients, with their own token lifetime if given."""
    clients = [
        {"client_id": "t1", "secret": "x1"},
        {"client_id": "t2", "secret": "x2", "token_lifetime": 2},
    ]
    response = await http.post(idp.url + "/_admin/clients", json={"clients": clients})
    assert response.json() == {"clients": 3}
    token = await http.post(idp.token_url, data=GRANT, auth=("t2", "x2"))
    assert token.json()["expires_in"] == 2


async def test_bad_admin_request_is_a_400(idp, http):
    """A malformed control request answers 400 and changes nothing."""
    response = await http.post(idp.url + "/_admin/fault", json={"status": 42})
    assert response.status_code == 400
    response = await http.post(idp.url + "/_admin/clients", json={"nope": []})
    assert response.status_code == 400
    response = await http.post(idp.url + "/_admin/stats", content=b"{not json")
    assert response.status_code == 400
    assert (await http.get(idp.url + "/_admin/nothing")).status_code == 404
    assert idp.clients.keys() == {"acme"}


def test_cli_idp_admin_flag():
    """`tokenflight idp --admin` turns the control endpoints on; they are off by default."""
    assert _parser().parse_args(["idp", "--admin"]).admin is True
    assert _parser().parse_args(["idp"]).admin is False


async def test_resource_latency_is_set_by_admin_and_checked(idp, http):
    """POST /_admin/resource sets the resource's latency; a negative one is a 400."""
    response = await http.post(idp.url + "/_admin/resource", json={"latency": 0.01})
    assert response.status_code == 200
    assert idp.resource_latency == 0.01
    token = (await http.post(idp.token_url, data=GRANT, auth=("acme", "s3cret"))).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await http.get(idp.resource_url, headers=headers)).status_code == 200
    bad = await http.post(idp.url + "/_admin/resource", json={"latency": -1})
    assert bad.status_code == 400
    assert idp.resource_latency == 0.01
