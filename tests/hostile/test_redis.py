"""Hostile values in Redis: corrupt entries, huge values, keys of the wrong type.

Whoever can write to Redis can put anything under a token's key. Each such value must
count as absent for that key alone: the process takes the lock, asks the identity
provider, and overwrites the value with a good entry; the store stays up for every other
key, and memory stays within a few MB.
"""

from __future__ import annotations

import json
import logging

import anyio
import pytest
import redis
from cryptography.fernet import Fernet

import test_redis_store
from redis_helpers import REDIS_HOST, REDIS_PORT, REDIS_URL, Issuer
from tokenflight.redis import RedisTokenStore

from .test_bodies import peak_growth

prefix = test_redis_store.prefix  # the fixture: a fresh key prefix, its keys deleted after

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client does not run under trio


def good_fields(**changes: object) -> bytes:
    """The JSON of a well-formed entry, with some fields changed (raw JSON allowed)."""
    fields: dict[str, object] = {
        "access_token": "planted",
        "token_type": "Bearer",
        "expires_in": 60,
        "obtained": 1e9,
        "expires": 4e9,
        "scope": None,
        "extra": {},
    }
    fields.update(changes)
    return json.dumps(fields).encode()


HUGE_NUMBER = "9" * 400
CORRUPT = {
    "400-digit expires_in": good_fields().replace(b'"expires_in": 60', HUGE_NUMBER.encode()),
    "400-digit obtained": good_fields().replace(b'"obtained": 1000000000.0', HUGE_NUMBER.encode()),
    "NaN expires": good_fields(expires=float("nan")),
    "expires_in a string": good_fields(expires_in="60"),
    "expires_in true": good_fields(expires_in=True),
    "empty access_token": good_fields(access_token=""),
    "CR LF in access_token": good_fields(access_token="planted\r\nX-Evil: 1"),
    "NUL in access_token": good_fields(access_token="planted\x00"),
    "LF in token_type": good_fields(token_type="Bearer\nX-Evil: 1"),
    "CR in token_type": good_fields(token_type="Bearer\r"),
    "scope of numbers": good_fields(scope=[1, 2]),
    "extra a list": good_fields(extra=[]),
    "not an object": b"[1, 2, 3]",
    "nested 30,000 deep": b"[" * 30_000 + b"]" * 30_000,
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "invalid UTF-8": b"\xff\xfe{}",
}


def planted(value: bytes, name: str, *, raw: bool = False) -> None:
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        client.set(name, value if raw else b"tf1:" + value)


def stored(name: str) -> bytes | None:
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        value = client.get(name)
    return None if value is None else bytes(value)


async def replaced_once(
    store: RedisTokenStore, prefix: str, keys: list[bytes] | None = None
) -> None:
    """One fetch of "k" asks the IdP once and leaves a good entry another store hands out."""
    issuer = Issuer()
    token = await store.fetch("k", issuer, min_ttl=0)
    assert issuer.calls == 1
    stats = store.stats()
    assert (stats.fallbacks, stats.outages, stats.redis_available) == (0, 0, True)
    reader = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=keys)
    try:
        again = await reader.fetch("k", Issuer(), min_ttl=0)
    finally:
        await reader.aclose()
    assert again.access_token == token.access_token
    assert reader.stats().store_hits == 1


@pytest.mark.parametrize("body", CORRUPT.values(), ids=CORRUPT.keys())
async def test_corrupt_entry_is_treated_as_absent_and_replaced(
    body: bytes, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed entry is ignored with a warning, refetched and overwritten."""
    planted(body, prefix + "k")
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        await replaced_once(store, prefix)
    finally:
        await store.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ignoring the entry" in warnings[0]
    assert "planted" not in caplog.text


@pytest.mark.parametrize(
    "value",
    [b"garbage \x00\xff bytes", b"tf1e:not-a-fernet-token", b"tf1e:" + b"A" * 200],
    ids=["no prefix", "sealed garbage", "sealed, not Fernet-shaped"],
)
async def test_garbage_is_replaced_with_or_without_keys(value: bytes, prefix: str) -> None:
    """Garbage, also after the encrypted prefix, is corrupt, not an undecryptable entry."""
    for keys in (None, [Fernet.generate_key()]):
        planted(value, prefix + "k", raw=True)
        store = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=keys)
        try:
            await replaced_once(store, prefix, keys)
        finally:
            await store.aclose()


async def test_unencrypted_entry_is_replaced_when_keys_are_set(prefix: str) -> None:
    """With encryption_keys, a plain entry (maybe planted) is ignored and overwritten."""
    planted(good_fields(), prefix + "k")
    store = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[Fernet.generate_key()])
    try:
        token = await store.fetch("k", Issuer(), min_ttl=0)
        assert token.access_token != "planted"
        value = stored(prefix + "k")
        assert value is not None
        assert value.startswith(b"tf1e:")
    finally:
        await store.aclose()


async def test_huge_value_is_refused_unread(prefix: str) -> None:
    """A 32 MB value under a token's key is replaced, costing under 5 MB of memory."""
    planted(b"x" * (32 << 20), prefix + "k")
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    issuer = Issuer()
    try:
        growth = await peak_growth(lambda: store.fetch("k", issuer, min_ttl=0))
        assert issuer.calls == 1
        assert growth < 5 * 1024 * 1024
        value = stored(prefix + "k")
        assert value is not None
        assert len(value) < 4096
    finally:
        await store.aclose()


async def test_key_of_the_wrong_type_stays_a_problem_of_that_key(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hash under a token's key (WRONGTYPE) is overwritten; the store stays up for all."""
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        client.hset(prefix + "k", "access_token", "planted")
    writer = RedisTokenStore(REDIS_URL, prefix=prefix)
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        shared = await writer.fetch("other", Issuer(), min_ttl=0)
        await replaced_once(store, prefix)
        assert (await store.fetch("other", Issuer(), min_ttl=0)).access_token == (
            shared.access_token
        )
        assert store.stats().store_hits == 1
        assert "unavailable" not in caplog.text
        assert "WRONGTYPE" in caplog.text
    finally:
        await writer.aclose()
        await store.aclose()


@pytest.mark.parametrize("kind", ["hash", "string without expiry"])
async def test_lock_key_that_never_expires_is_replaced(kind: str, prefix: str) -> None:
    """A lock key tokenflight never wrote (no expiry, or not a string) does not block."""
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        if kind == "hash":
            client.hset(prefix + "k:lock", "owner", "nobody")
        else:
            client.set(prefix + "k:lock", "nobody")
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        with anyio.fail_after(10):  # only a guard: waiting out such a lock would take 30 s
            await replaced_once(store, prefix)
        stats = store.stats()
        assert (stats.fetches, stats.fetches_avoided, stats.lock_takeovers) == (1, 0, 0)
    finally:
        await store.aclose()


async def test_a_good_entry_still_reads(prefix: str) -> None:
    """The validation accepts what the store itself writes (with scopes and extras)."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        written = await store.fetch("k", Issuer(), min_ttl=0)
        read = await store.fetch("k", Issuer(), min_ttl=0, current=None)
        assert read.access_token == written.access_token
        assert (read.scope, dict(read.extra)) == (("read",), {"tenant": "acme"})
    finally:
        await store.aclose()


async def test_extra_of_a_planted_entry_keeps_only_bounded_scalars(prefix: str) -> None:
    """A planted entry's nested or huge `extra` is cut to scalars of about 4 KiB on read."""
    extra: dict[str, object] = {"tenant": "acme", "nested": [[]] * 4000, "long": "x" * 10_000}
    extra |= {f"f{i}": i for i in range(1500)}
    planted(good_fields(extra=extra), prefix + "k")  # under MAX_ENTRY_BYTES
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        read = await store.fetch("k", Issuer(), min_ttl=0)
    finally:
        await store.aclose()
    assert read.access_token == "planted"
    assert read.extra["tenant"] == "acme"
    assert "nested" not in read.extra
    assert len(read.extra["long"]) == 1024
    assert len(json.dumps(dict(read.extra))) < 8192
