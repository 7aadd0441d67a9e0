"""pytest fixtures for tests of code that uses tokenflight (registered as ``tokenflight``).

pytest loads this plugin in every session of every project that installs tokenflight, so
it lives outside the `tokenflight` package and imports nothing but pytest until a fixture
is used. The fixtures are async: they run under anyio's pytest plugin, on the backend of
the test's ``anyio_backend`` (asyncio or trio).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tokenflight.testing import IdentityProvider

__all__ = ["tokenflight_idp"]


@pytest.fixture
async def tokenflight_idp() -> AsyncGenerator[IdentityProvider]:
    """A running bundled identity provider (``generic`` profile) with client ``test-client``.

    Its secret is ``tokenflight_idp.clients["test-client"].secret``; the token endpoint is
    ``tokenflight_idp.token_url``. Use it from ``@pytest.mark.anyio`` tests.
    """
    from tokenflight.testing import running_idp

    async with running_idp() as idp:
        yield idp
