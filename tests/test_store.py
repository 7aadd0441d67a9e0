"""The TokenStore protocol as the manager uses it: the fetch budget as `deadline`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from helpers import creds
from tokenflight import RetryPolicy, Token, TokenManager, TokenStore

pytestmark = pytest.mark.anyio


class OldStore:
    """A store written before `deadline` existed: `fetch` without it."""

    def __init__(self) -> None:
        self.asked = 0

    async def fetch(
        self,
        key: str,
        fetch_new: Callable[[], Awaitable[Token]],
        *,
        min_ttl: float,
        current: Token | None,
    ) -> Token:
        self.asked += 1
        return await fetch_new()

    async def invalidate(self, key: str, access_token: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


class NewStore(OldStore):
    """A store that takes `deadline` and records it, with the loop time it was asked at."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, float | None]] = []

    async def fetch(
        self, key: str, fetch_new: Callable[[], Awaitable[Token]], **options: Any
    ) -> Token:
        self.calls.append((anyio.current_time(), options.get("deadline")))
        return await super().fetch(
            key, fetch_new, min_ttl=options["min_ttl"], current=options["current"]
        )


async def test_a_store_is_given_the_fetch_budget_as_deadline(idp):
    """`deadline` is the loop time at which the fetch's total_timeout runs out."""
    store = NewStore()
    typed: TokenStore = store  # a fetch that also takes deadline= matches the protocol
    async with TokenManager(store=typed, retry=RetryPolicy(total_timeout=7.0)) as tokens:
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
    [(asked_at, deadline)] = store.calls
    assert deadline is not None
    assert asked_at < deadline <= asked_at + 7.0


async def test_a_store_without_deadline_still_works(idp):
    """A store whose `fetch` predates `deadline` is called without it."""
    store = OldStore()
    typed: TokenStore = store  # it matches the protocol's type too (mypy checks the tests)
    async with TokenManager(store=typed) as tokens:
        tokens.register("acme", creds(idp))
        assert (await tokens.get_token("acme")).access_token
    assert store.asked == 1
