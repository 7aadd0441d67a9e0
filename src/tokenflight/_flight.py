"""Single flight: one piece of work shared by every caller that waits for it.

Token fetches, tenant resolution and discovery each run once per key however many callers
ask at once. The work runs in the manager's task group, so a waiter's cancellation cannot
kill it for the others; it has a time budget; its result or its typed error goes to every
waiter; and `SingleFlight` remembers a failure for a while, so a broken tenant or issuer
is not asked again by every caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import sniffio
from anyio.abc import TaskGroup

from ._errors import ManagerClosedError, TokenError

__all__ = ["Flight", "SingleFlight"]

logger = logging.getLogger("tokenflight")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: Failures remembered at most, per `SingleFlight` (the oldest are forgotten first).
MAX_REMEMBERED = 10_000


class Event(Protocol):
    def set(self) -> None: ...
    async def wait(self) -> Any: ...


def native_event() -> Event:
    """The event loop's own event. anyio's wraps it in one more coroutine per waiter, which
    a cold start's tens of thousands of waiters pay for in time and garbage collection."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:  # made outside a loop: anyio's adapts later
        return anyio.Event()
    if library == "trio":
        import trio

        return trio.Event()
    return asyncio.Event()


class Flight(Generic[T]):
    """One piece of work in progress: waiters `await flight.done.wait()`, then read
    `outcome()` (a method of its own would be one more coroutine for each of them)."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = native_event()
        self.result: T | None = None
        self.error: TokenError | None = None

    def outcome(self) -> T:
        """The work's result, or a copy of its error (each waiter gets its own)."""
        if self.error is not None:
            raise self.error._clone()
        return self.result  # type: ignore[return-value]

    async def run(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        budget: float,
        what: str,
        failure: Callable[[str], TokenError],
    ) -> None:
        """Run `work` into `result`, or a typed `error`; does not set `done`.

        Args:
            budget: Seconds the work may take.
            what: The work, for messages ("resolving tenant 'acme'").
            failure: Makes the error for a timeout or an unexpected exception.

        Raises:
            BaseException: Only the manager's own cancellation, after recording it.
        """
        # asyncio's too: under trio it is just an exception some user code raised.
        cancelled = (anyio.get_cancelled_exc_class(), asyncio.CancelledError)
        try:
            with anyio.move_on_after(budget) as scope:
                self.result = await work()
            if scope.cancelled_caught:
                self.error = failure(f"{what} took longer than its {budget:g}s budget")
        except TokenError as exc:
            self.error = exc
        except cancelled as exc:
            self.error = ManagerClosedError(f"the TokenManager closed while {what}")
            await anyio.lowlevel.checkpoint_if_cancelled()  # a real cancellation goes on
            # Not cancelled: user code raised the cancellation exception itself. That is
            # its failure, not a shutdown of the manager.
            self.error = failure(f"{what} raised {type(exc).__name__}")
            self.error.__cause__ = exc
        except Exception as exc:  # a bug must not hang the waiters or kill the task group
            logger.error("unexpected %s while %s", type(exc).__name__, what, exc_info=exc)
            self.error = failure(f"{what} failed: unexpected {type(exc).__name__}")
            self.error.__cause__ = exc
        except BaseException:
            self.error = ManagerClosedError(f"the TokenManager closed while {what}")
            raise


class SingleFlight(Generic[K, T]):
    """Runs work once per key for all concurrent callers, and remembers failures briefly.

    Args:
        budget: Seconds each run may take.
        remember_for: Seconds to answer a key's failure without running again.
        failure: Makes the error for a timeout or an unexpected exception.
    """

    def __init__(
        self,
        *,
        budget: float,
        remember_for: Callable[[TokenError], float],
        failure: Callable[[str], TokenError],
    ) -> None:
        self._budget = budget
        self._remember_for = remember_for
        self._failure = failure
        self._pending: dict[K, Flight[T]] = {}
        self._failed: dict[K, tuple[float, TokenError]] = {}  # oldest first

    async def run(self, key: K, work: Callable[[], Awaitable[T]], tg: TaskGroup, *, what: str) -> T:
        """`work()`'s result for `key`: shared with concurrent callers, failures remembered.

        Raises:
            TokenError: The work's error, or the remembered one.
        """
        failed = self._failed.get(key)
        if failed is not None:
            if anyio.current_time() < failed[0]:
                raise failed[1]._clone()
            del self._failed[key]
        flight = self._pending.get(key)
        if flight is None:
            flight = self._pending[key] = Flight()
            tg.start_soon(self._fly, key, flight, work, what)
        await flight.done.wait()
        return flight.outcome()

    def forget(self, key: K) -> None:
        """Drop a remembered failure, so that the next call runs the work again."""
        self._failed.pop(key, None)

    async def _fly(
        self, key: K, flight: Flight[T], work: Callable[[], Awaitable[T]], what: str
    ) -> None:
        try:
            await flight.run(work, budget=self._budget, what=what, failure=self._failure)
        finally:
            del self._pending[key]
            error = flight.error
            if error is not None and not isinstance(error, ManagerClosedError):
                self._remember(key, error)
            flight.done.set()

    def _remember(self, key: K, error: TokenError) -> None:
        seconds = self._remember_for(error)
        if seconds <= 0:
            return
        if len(self._failed) >= MAX_REMEMBERED:  # hostile keys must not grow memory
            now = anyio.current_time()
            for old in [k for k, (until, _) in self._failed.items() if until <= now]:
                del self._failed[old]
            if len(self._failed) >= MAX_REMEMBERED:
                del self._failed[next(iter(self._failed))]
        self._failed.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._failed[key] = (anyio.current_time() + seconds, error)
