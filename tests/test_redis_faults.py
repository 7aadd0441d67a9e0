"""Redis faults: unreachable from the start, killed and restarted, stalled mid-request.

These tests need no shared Redis: each starts a `redis-server` of its own on a free port
(or none at all), so they run wherever the binary is installed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis

from helpers import creds, free_port, wait_until
from redis_helpers import REDIS_HOST, Issuer, raw_entries, start_redis
from tokenflight import TokenManager
from tokenflight.redis import RedisTokenStore
from tokenflight.testing import IdentityProvider

if shutil.which("redis-server") is None:
    reason = "no redis-server binary on PATH (these tests start their own)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.anyio  # not `redis`: no shared Redis needed


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client does not run under trio


@pytest.fixture
def prefix() -> str:
    return f"tftest:{secrets.token_hex(6)}:"  # the servers here die with their test


# Not conftest's idp: 300 s tokens, and no client (each test registers its own).
@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(profile="generic", token_lifetime=300) as provider:
        yield provider


# -- Redis trouble ---------------------------------------------------------------------


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]


async def test_unreachable_redis_from_the_start_still_delivers_tokens(
    prefix: str, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening, every tenant still gets its token; one warning is logged."""
    caplog.set_level(logging.INFO, logger="tokenflight")
    store = RedisTokenStore(f"redis://127.0.0.1:{free_port(REDIS_HOST)}/0", prefix=prefix)
    async with TokenManager(store=store) as tokens:
        for i in range(5):
            idp.add_client(f"c{i}", "s3cret")
            tokens.register(f"t{i}", creds(idp, f"c{i}"))
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(tokens.get_token, f"t{i}")
        got = [await tokens.get_token(f"t{i}") for i in range(5)]
    assert len({t.access_token for t in got}) == 5
    assert idp.token_requests == 5
    stats = store.stats()
    assert (stats.fallbacks, stats.outages, stats.redis_available) == (5, 1, False)
    assert len(outage_warnings(caplog)) == 1
    assert all(t.access_token not in caplog.text for t in got)


async def test_redis_stopping_and_coming_back(
    prefix: str, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Killing Redis mid-run costs no token (one warning); sharing resumes when it returns."""
    caplog.set_level(logging.INFO, logger="tokenflight")
    port = free_port(REDIS_HOST)
    server = start_redis(port)
    store = RedisTokenStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, retry_interval=0.2)
    try:
        async with TokenManager(store=store) as tokens:
            for i in range(20):
                idp.add_client(f"c{i}", "s3cret")
                tokens.register(f"t{i}", creds(idp, f"c{i}"))
            await tokens.get_token("t0")
            assert len(raw_entries(prefix, port)) == 1

            server.kill()
            server.wait()
            async with anyio.create_task_group() as tg:  # callers during the outage
                for i in range(1, 8):
                    tg.start_soon(tokens.get_token, f"t{i}")
            for i in range(8, 11):
                await tokens.get_token(f"t{i}")
            assert store.stats().fallbacks == 10
            assert len(outage_warnings(caplog)) == 1

            server = start_redis(port)
            with anyio.fail_after(5):
                i = 11
                while not raw_entries(prefix, port):  # a new fetch writes to Redis again
                    await anyio.sleep(0.25)
                    await tokens.get_token(f"t{i}")
                    i += 1
        stats = store.stats()
        assert stats.redis_available
        assert stats.outages == 1
        assert len(outage_warnings(caplog)) == 1
        assert sum("available again" in r.getMessage() for r in caplog.records) == 1
        assert idp.token_requests == i
    finally:
        server.kill()
        server.wait()


# -- a lock orphaned by a stalled Redis -------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of this test's own (it may be paused) and an admin client to it."""
    port = free_port(REDIS_HOST)
    server = start_redis(port)
    admin = redis.Redis(host=REDIS_HOST, port=port, socket_timeout=5)
    try:
        yield f"redis://{REDIS_HOST}:{port}/0", admin
    finally:
        admin.close()
        server.kill()
        server.wait()


async def orphan_a_lock(
    url: str, admin: redis.Redis, prefix: str, **options: Any
) -> RedisTokenStore:
    """Make a store's lock request time out while Redis pauses writes, then let it run.

    Returns the store (its token came from a fallback) once Redis holds the lock that the
    timed-out request took with nobody owning it.
    """
    store = RedisTokenStore(url, prefix=prefix, **options)
    await store.fetch("warm-up", Issuer(), min_ttl=0)  # connection and scripts are ready
    admin.client_pause(60_000, all=False)  # pause writes (and scripts) only
    try:
        issuer = Issuer()
        await store.fetch("k", issuer, min_ttl=0)  # reads fine, the lock request stalls
        assert issuer.calls == 1
        assert store.stats().fallbacks == 1
    finally:
        admin.client_unpause()
    await wait_until(lambda: admin.exists(prefix + "k:lock") == 1)
    return store


@pytest.mark.slow
async def test_a_lock_orphaned_by_a_stalled_redis_costs_at_most_one_lock_ttl(
    prefix: str, private_redis: tuple[str, redis.Redis]
) -> None:
    """A lock request that ran after it timed out leaves a lock of at most lock_ttl."""
    url, admin = private_redis
    a = await orphan_a_lock(url, admin, prefix)
    b = RedisTokenStore(url, prefix=prefix)
    try:
        assert 0 < admin.pttl(prefix + "k:lock") <= 5_000  # the default lock_ttl, 5 s
        issuer = Issuer()
        with anyio.fail_after(3 * 5.0 + 5):  # generous: this only guards against a hang
            await b.fetch("k", issuer, min_ttl=0)
        assert issuer.calls == 1
        assert b.stats().lock_takeovers == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_process_whose_lock_request_timed_out_deletes_that_lock(
    prefix: str, private_redis: tuple[str, redis.Redis]
) -> None:
    """The orphaned lock goes at the store's next successful Redis operation."""
    url, admin = private_redis
    a = await orphan_a_lock(url, admin, prefix, retry_interval=0)
    b = RedisTokenStore(url, prefix=prefix)
    try:
        await a.fetch("other", Issuer(), min_ttl=0)
        assert admin.exists(prefix + "k:lock") == 0
        issuer = Issuer()
        with anyio.fail_after(5):
            await b.fetch("k", issuer, min_ttl=0)
        stats = b.stats()
        assert (issuer.calls, stats.fetches_avoided, stats.lock_takeovers) == (1, 0, 0)
    finally:
        await a.aclose()
        await b.aclose()
