"""Test helpers: a bundled OAuth 2.0 identity provider on loopback, with faults and fixtures.

```python
async with IdentityProvider(profile="auth0") as idp:
    client = idp.add_client("acme", "s3cret", default_audience="https://api.example")
    idp.inject(Fault(status=503), count=2)
    ...  # fetch tokens from idp.token_url, call idp.resource_url
```
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ._fixtures import TEST_CLIENT_ID as TEST_CLIENT_ID
from ._fixtures import running_idp as running_idp
from ._idp import IdentityProvider as IdentityProvider
from ._model import PROFILE_NAMES as PROFILE_NAMES
from ._model import PROFILES as PROFILES
from ._model import Fault as Fault
from ._model import IdPClient as IdPClient
from ._model import Profile as Profile
from ._model import ProfileName as ProfileName
from ._model import TokenRequestRecord as TokenRequestRecord

__all__ = [
    "Fault",
    "IdPClient",
    "IdentityProvider",
    "PROFILES",
    "PROFILE_NAMES",
    "Profile",
    "ProfileName",
    "TEST_CLIENT_ID",
    "TokenRequestRecord",
    "running_idp",
    "set_testing",
]


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
