"""A ready identity provider with one client, for fixtures and quick scripts."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._idp import IdentityProvider
from ._model import ProfileName

if TYPE_CHECKING:
    from .._config import ClientCredentials

__all__ = ["TEST_CLIENT_ID", "credentials_for", "running_idp"]

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


def credentials_for(idp: IdentityProvider, client_id: str = TEST_CLIENT_ID) -> ClientCredentials:
    """The `ClientCredentials` of ``client_id`` at ``idp``, as its profile wants them.

    The client authenticates in the form body where the profile does not accept HTTP Basic
    (``dwolla-legacy``), and asks for an audience, the IdP's resource URL, where the
    profile requires one and has no default (``auth0``). The one place the fixtures build
    credentials.
    """
    from .._client_auth import ClientSecretBasic, ClientSecretPost
    from .._config import ClientCredentials

    profile = idp.profile
    secret = idp.clients[client_id].secret
    audience = None
    if profile.audience_required and profile.default_audience is None:
        audience = idp.resource_url
    return ClientCredentials(
        token_url=idp.token_url,
        client_id=client_id,
        auth=ClientSecretBasic(secret) if profile.basic_auth else ClientSecretPost(secret),
        audience=audience,
    )
