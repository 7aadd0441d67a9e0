"""``tokenflight_manager`` for pytest-asyncio (strict and auto mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tokenflight import ClientCredentials, TokenManager

from ._hosted import hosted_manager


@pytest_asyncio.fixture
async def tokenflight_manager(
    tokenflight_credentials: ClientCredentials,
) -> AsyncIterator[TokenManager]:
    """A running `TokenManager` with tenant ``"test"`` at ``tokenflight_idp``."""
    async with hosted_manager(tokenflight_credentials) as tokens:
        yield tokens
