"""A short soak: many callers, many tenants, a faulty IdP; no errors and no 401s."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
_spec = importlib.util.spec_from_file_location("tokenflight_bench_soak", _PATH)
assert _spec is not None
assert _spec.loader is not None
soak = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = soak  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(soak)


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
