"""Every attack in benchmarks/hostile.py, with its bounds: a typed error, under 5 MB of
memory, no event-loop block over 100 ms, and a tenant on a healthy IdP served throughout."""

from __future__ import annotations

import pytest

from helpers import load_benchmark

pytestmark = pytest.mark.anyio

hostile = load_benchmark("hostile")

EXPECTED = {
    "token endpoint": "MalformedTokenResponse",
    "discovery": "MalformedTokenResponse",
    "header injection": "MalformedTokenResponse",
    "redirect": "ConfigurationError",
    "token endpoint that never answers": "TokenEndpointUnavailable",
    "resolver that never answers": "TenantResolutionError",
}


def expected_error(name: str) -> str:
    for fragment in sorted(EXPECTED, key=len, reverse=True):
        if fragment in name:
            return EXPECTED[fragment]
    raise AssertionError(f"no expected error for {name!r}")


@pytest.mark.parametrize("attack", hostile.attacks(scale=400), ids=lambda a: a.name)
async def test_attack_is_contained(attack):
    """The attack ends in its typed error, within 5 MB and 100 ms; healthy tenants go on."""
    figures = await hostile.figures(attack, budget=0.5)
    assert figures.error == expected_error(attack.name)
    assert figures.peak_growth < 5 * 2**20
    assert figures.longest_block < 0.1  # CPU time of the loop's thread, not wall time
    assert figures.healthy_fetches >= 3
    assert figures.healthy_failures == 0


async def test_api_401_storm_is_contained():
    """An API answering every call with a gzip-bomb 401: each body is dropped after 64 KiB,
    401s in a row cool down, and the whole storm stays within the attacks' bounds."""
    [storm] = [a for a in hostile.store_and_api_attacks(scale=400) if a.api_calls]
    figures = await hostile.figures(storm, budget=0.5)
    assert figures.error.startswith("HTTP 401, ")
    token_requests = int(figures.error.split(", ")[1].split()[0])
    assert token_requests < storm.api_calls // 5  # not one per call: rejections cool down
    assert figures.peak_growth < 5 * 2**20  # 7 MB on aiohttp before dropped bodies stayed unread
    assert figures.longest_block < 0.1
    assert figures.healthy_fetches >= 3
    assert figures.healthy_failures == 0
