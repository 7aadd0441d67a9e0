"""pytest fixtures for tests of code that uses tokenflight (registered as ``tokenflight``).

The fixtures are async: they run under anyio's pytest plugin, on the backend of the test's
``anyio_backend`` (asyncio or trio). Importing this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._idp import IdentityProvider

__all__ = ["tokenflight_idp"]


@pytest.fixture
async def tokenflight_idp() -> AsyncGenerator[IdentityProvider]:
    """A running bundled identity provider (``generic`` profile) with client ``test-client``.

    Its secret is ``tokenflight_idp.clients["test-client"].secret``; the token endpoint is
    ``tokenflight_idp.token_url``. Use it from ``@pytest.mark.anyio`` tests.
    """
    from ._fixtures import running_idp

    async with running_idp() as idp:
        yield idp
