"""A short soak: many callers, many tenants, a faulty IdP; no errors and no 401s."""

from __future__ import annotations

import pytest

from helpers import load_benchmark

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

soak = load_benchmark("soak")


async def test_short_soak_has_no_errors_and_no_401s():
    """3.5 s, 300 callers, 30 tenants, 1 s tokens, 5% faulty answers: no errors, no 401s."""
    config = soak.SoakConfig(
        callers=300, tenants=30, duration=3.5, lifetime=1.0, fault_rate=0.05, checkers=10, pause=0.1
    )
    result = await soak.run_soak(config)
    assert result.calls > 1000
    assert result.resource_calls > 50
    assert dict(result.errors) == {}
    assert result.expired_handed_out == 0
    assert result.resource_401 == 0
    assert result.idp_ok >= result.minimum_requests * 0.8
    assert result.idp_ok <= result.minimum_requests * 3 + config.tenants
