"""Token economy: tenants called now and then over a day pay for one token each.

Runs benchmarks/scenario_economy.py's day (B9) at a smaller scale, on trio's MockClock.
"""

from __future__ import annotations

from helpers import load_benchmark

economy = load_benchmark("scenario_economy")


def test_a_day_of_sparse_calls_costs_one_token_per_tenant():
    """100 tenants with 24-hour tokens, called 1-60 min apart for a day: 100 requests."""
    result = economy.simulate(100, 86_400.0, seed=10)
    assert result["token_requests"] == result["minimum"] == 100
    assert result["refreshes"] == 0
    assert result["calls"] > 40 * 100  # about 47 calls per tenant
    assert result["evictions"] == 0
