"""The ``tokenflight_manager`` fixture's manager, which one task of its own enters and leaves.

Imported by the fixture when a test uses it, never when pytest loads the plugin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sniffio

from tokenflight import ClientCredentials, TokenManager

TENANT = "test"


@asynccontextmanager
async def hosted_manager(credentials: ClientCredentials) -> AsyncIterator[TokenManager]:
    """A running manager with tenant ``"test"``.

    pytest-asyncio runs a fixture's setup and teardown in different tasks, and a task
    group must be left by the task that entered it: on asyncio the manager lives in a
    task of its own, started here and stopped at teardown.
    """
    if sniffio.current_async_library() != "asyncio":
        async with TokenManager() as tokens:
            tokens.register(TENANT, credentials)
            yield tokens
        return
    ready: asyncio.Future[TokenManager] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def host() -> None:
        try:
            async with TokenManager() as tokens:
                tokens.register(TENANT, credentials)
                ready.set_result(tokens)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    task = asyncio.create_task(host())
    try:
        yield await ready
    finally:
        stop.set()
        await task
