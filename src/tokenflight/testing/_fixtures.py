"""A ready identity provider with one client, for fixtures and quick scripts."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from ._idp import IdentityProvider
from ._model import ProfileName

__all__ = ["TEST_CLIENT_ID", "running_idp"]

#: The client id `running_idp` (and the ``tokenflight_idp`` fixture) registers.
TEST_CLIENT_ID = "test-client"


@asynccontextmanager
async def running_idp(
    *,
    profile: ProfileName = "generic",
    token_lifetime: float | None = None,
    latency: float = 0.0,
    client_id: str = TEST_CLIENT_ID,
    secret: str | None = None,
) -> AsyncGenerator[IdentityProvider]:
    """Run an `IdentityProvider` with one client registered.

    The client's secret is ``idp.clients[client_id].secret`` (random unless given).

    Args:
        profile: The provider to imitate.
        token_lifetime: Seconds a token lives; the profile's default when ``None``.
        latency: Seconds to wait before answering each token request.
        client_id: The id of the registered client.
        secret: Its secret; random when ``None``.

    Yields:
        The running identity provider.
    """
    async with IdentityProvider(
        profile=profile, token_lifetime=token_lifetime, latency=latency
    ) as idp:
        idp.add_client(client_id, secret)
        yield idp
