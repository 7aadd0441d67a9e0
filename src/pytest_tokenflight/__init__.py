"""pytest fixtures for tests of code that uses tokenflight (registered as ``tokenflight``).

pytest loads this plugin in every session of every project that installs tokenflight, so
it lives outside the `tokenflight` package and imports nothing but pytest until a fixture
is used.

- ``tokenflight_idp``: a running bundled identity provider with client ``test-client``,
  served by an event loop thread of its own, so it works under anyio's plugin (asyncio or
  trio), pytest-asyncio (strict or auto mode) and in plain synchronous tests. Choose the
  provider it imitates with ``@pytest.mark.parametrize("tokenflight_idp", ["auth0"],
  indirect=True)``.
- ``tokenflight_credentials``: the `ClientCredentials` of that client, fitting the profile.
- ``tokenflight_manager``: a running `TokenManager` on the test's own event loop with
  tenant ``"test"`` registered; an async fixture, for pytest-asyncio when it is active,
  else for anyio's plugin.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tokenflight import ClientCredentials, TokenManager
    from tokenflight.testing import IdentityProvider

__all__ = [
    "pytest_configure",
    "tokenflight_credentials",
    "tokenflight_idp",
    "tokenflight_manager",
]


@pytest.fixture
def tokenflight_idp(request: pytest.FixtureRequest) -> Iterator[IdentityProvider]:
    """A running bundled identity provider with client ``test-client``.

    Its secret is ``tokenflight_idp.clients["test-client"].secret``; the token endpoint is
    ``tokenflight_idp.token_url``. Parametrize it indirectly with a profile name
    (``"generic"`` by default). Faults and counters work from any test.
    """
    from anyio.from_thread import start_blocking_portal

    from tokenflight.testing import running_idp

    profile = getattr(request, "param", "generic")  # checked by the IdP: a bad name raises
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(running_idp(profile=profile)) as idp,  # type: ignore[arg-type]
    ):
        yield idp


@pytest.fixture
def tokenflight_credentials(tokenflight_idp: IdentityProvider) -> ClientCredentials:
    """The `ClientCredentials` of ``tokenflight_idp``'s ``test-client``.

    They fit the IdP's profile: the form body where HTTP Basic is not accepted
    (``dwolla-legacy``), an audience (the IdP's resource URL) where one is required
    (``auth0``).
    """
    from tokenflight.testing._fixtures import credentials_for

    return credentials_for(tokenflight_idp)


async def tokenflight_manager(
    tokenflight_credentials: ClientCredentials,
) -> AsyncIterator[TokenManager]:
    """A running `TokenManager` with tenant ``"test"`` at ``tokenflight_idp``.

    Undecorated: `pytest_configure` makes it a fixture of the async plugin in use.
    """
    from ._hosted import hosted_manager  # tokenflight, httpx, anyio: only once it is used

    async with hosted_manager(tokenflight_credentials) as tokens:
        yield tokens


def pytest_configure(config: pytest.Config) -> None:
    """Register ``tokenflight_manager`` for the async plugin this session uses."""
    if config.pluginmanager.has_plugin("asyncio"):  # pytest-asyncio, strict or auto
        import pytest_asyncio

        fixture = pytest_asyncio.fixture(tokenflight_manager)
    else:  # anyio's plugin runs plain async fixtures
        fixture = pytest.fixture(tokenflight_manager)
    plugin = types.ModuleType("pytest_tokenflight.manager")  # pytest reads fixtures off modules
    plugin.tokenflight_manager = fixture  # type: ignore[attr-defined]
    config.pluginmanager.register(plugin, "tokenflight-manager")
