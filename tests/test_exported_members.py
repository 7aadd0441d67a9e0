"""The public surface: `__all__` lists exactly the public names, sorted; py.typed ships."""

from __future__ import annotations

import importlib.resources
import types

import tokenflight
import tokenflight.testing


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_is_sorted_and_complete():
    """tokenflight.__all__ is sorted and names every public attribute, and nothing else."""
    assert tokenflight.__all__ == sorted(tokenflight.__all__)
    assert set(tokenflight.__all__) == public_names(tokenflight)
    for name in tokenflight.__all__:
        assert getattr(tokenflight, name).__module__.startswith("tokenflight.")


def test_testing_all_is_sorted_and_complete():
    """tokenflight.testing.__all__ is sorted and names every public attribute, and nothing else."""
    assert tokenflight.testing.__all__ == sorted(tokenflight.testing.__all__)
    assert set(tokenflight.testing.__all__) == public_names(tokenflight.testing)


def test_core_api_names_are_exported():
    """The names the README and issue 2 promise are importable from tokenflight."""
    promised = {
        "TokenManager",
        "ClientCredentials",
        "RefreshPolicy",
        "RetryPolicy",
        "Token",
        "TokenError",
        "TokenRequestRefused",
        "TokenEndpointUnavailable",
        "MalformedTokenResponse",
        "ConfigurationError",
        "UnknownTenantError",
        "TenantResolutionError",
        "ManagerClosedError",
    }
    assert promised <= set(tokenflight.__all__)


def test_instrumentation_names_are_exported():
    """The instrumentation protocol and its event values are importable from tokenflight."""
    promised = {
        "Instrumentation",
        "FetchStarted",
        "FetchFinished",
        "CooldownEntered",
        "SlotEvicted",
    }
    assert promised <= set(tokenflight.__all__)


def test_py_typed_ships():
    """The package carries the PEP 561 py.typed marker."""
    assert importlib.resources.files("tokenflight").joinpath("py.typed").is_file()
