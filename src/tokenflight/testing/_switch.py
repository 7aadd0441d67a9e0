"""The testing switch: retries without waits, fewer attempts, restored on leaving."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

__all__ = ["set_testing"]

if TYPE_CHECKING:
    from .._endpoint import TestingMode


class _TestingMode:
    """What `set_testing()` returns: leaving it as a context manager restores the before."""

    def __init__(self, before: TestingMode) -> None:
        self._before = before

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        from .._endpoint import _testing

        _testing.no_wait, _testing.attempts = self._before.no_wait, self._before.attempts


def set_testing(testing: bool = True, *, attempts: int | None = None) -> _TestingMode:
    """Turn retry waits off (or back on) for your own tests.

    With testing on, retried token requests are sent again at once instead of after a
    backoff, so a test of failure handling takes milliseconds; `Retry-After` is ignored
    too. `attempts` caps the attempts per token request (1: no retries). Works as a plain
    call, or as a context manager that restores the previous mode when it ends:

    ```python
    with set_testing(attempts=1):
        ...
    ```

    Raises:
        ValueError: `attempts` is not a positive integer.
    """
    from .._endpoint import _testing

    if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
        raise ValueError(f"attempts must be a positive integer, not {attempts!r}")
    before = dataclasses.replace(_testing)
    _testing.no_wait = testing
    _testing.attempts = attempts if testing else None
    return _TestingMode(before)
