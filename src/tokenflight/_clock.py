"""The event loop's clock, looked up once so that reading it costs a plain call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio
import sniffio

__all__ = ["loop_clock"]


def loop_clock() -> Callable[[], float]:
    """Return the running event loop's monotonic clock as a cheap callable.

    `anyio.current_time()` finds the backend on every call (about a microsecond); the
    token fast path reads the clock on every call, so bind the backend's clock once.
    Trio's clock may be a test's `MockClock`, which this honours.
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        loop = asyncio.get_running_loop()
        if type(loop).time is asyncio.BaseEventLoop.time:
            return time.monotonic  # what BaseEventLoop.time() returns, minus a Python call
        return loop.time
    if library == "trio":
        import trio

        return trio.lowlevel.current_clock().current_time
    return anyio.current_time
