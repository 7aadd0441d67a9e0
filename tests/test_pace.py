"""A ceiling of token requests per second per identity provider (issue 10, item 4)."""

from __future__ import annotations

import anyio
import pytest

from tokenflight import ClientCredentials, ClientSecretBasic, ConfigurationError, TokenManager
from tokenflight._origins import MAX_ORIGINS, RequestPace
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio


def test_a_burst_of_a_seconds_worth_then_even_spacing():
    """At 4 per second: 4 requests at once, then one every 0.25 s, on the pacer's clock."""
    now = [100.0]
    pace = RequestPace(4, lambda: now[0])
    waits = [pace.reserve("https://idp.example:443") for _ in range(8)]
    assert waits == pytest.approx([0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0])
    now[0] += 10  # idle for a while: the credit is back, not more than a second's worth
    assert [pace.reserve("https://idp.example:443") for _ in range(5)] == pytest.approx(
        [0, 0, 0, 0, 0.25]
    )


def test_origins_are_paced_apart_and_forgotten_when_idle():
    """Each origin has its own pace; idle origins are dropped past MAX_ORIGINS."""
    now = [0.0]
    pace = RequestPace(1, lambda: now[0])
    assert pace.reserve("a") == 0
    assert pace.reserve("a") == pytest.approx(1.0)
    assert pace.reserve("b") == 0
    for n in range(MAX_ORIGINS):
        pace.reserve(f"o{n}")
    now[0] = 5.0
    pace.reserve("fresh")
    assert len(pace._next) <= 2


def test_the_ceiling_must_be_a_positive_rate():
    """Zero, negative, infinite or non-numeric ceilings are ConfigurationErrors."""
    for bad in (0, -1, float("inf"), float("nan"), "10", True):
        with pytest.raises(ConfigurationError, match="max_fetch_rate_per_origin"):
            TokenManager(max_fetch_rate_per_origin=bad)  # type: ignore[arg-type]


async def test_a_cold_start_keeps_to_the_providers_rate():
    """12 cold tenants at 4 requests per second: all get tokens, and the last request
    arrives no sooner than the ceiling allows (4 at once, then 8 spaced 0.25 s: 2 s, where
    12 unpaced requests on loopback take a few milliseconds)."""
    async with IdentityProvider() as idp, TokenManager(max_fetch_rate_per_origin=4) as tokens:
        idp.add_client("acme", "acme-secret")
        for n in range(12):
            tokens.register(
                f"t{n}",
                ClientCredentials(
                    token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic("acme-secret")
                ),
            )
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(tokens.get_token, f"t{n}")
        arrivals = sorted(record.time for record in idp.requests)
        assert len(arrivals) == 12
        assert arrivals[-1] - started >= 8 * 0.25 - 1e-6
