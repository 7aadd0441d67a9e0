"""Fleet mode: RedisTokenStore against a real Redis on 127.0.0.1:6379 (asyncio only)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
import redis
import redis.asyncio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography.fernet import Fernet, InvalidToken

from helpers import api_server, creds
from redis_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    Issuer,
    answers,
    raw_entries,
)
from tokenflight import (
    ConfigurationError,
    RefreshPolicy,
    RetryPolicy,
    Token,
    TokenError,
    TokenManager,
)
from tokenflight.redis import RedisTokenStore
from tokenflight.testing import Fault, IdentityProvider

WORKER = Path(__file__).with_name("fleet_worker.py")


if not answers(REDIS_PORT):
    reason = f"no Redis answers at {REDIS_HOST}:{REDIS_PORT}; start one with `redis-server`"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client does not run under trio


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"tftest:{secrets.token_hex(6)}:"
    yield name
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        keys = list(client.scan_iter(match=name + "*"))
        if keys:
            client.delete(*keys)


# Not conftest's idp: 300 s tokens, and no client (each test registers its own).
@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(profile="generic", token_lifetime=300) as provider:
        yield provider


# -- the store's own rules -------------------------------------------------------------


async def test_refresh_round_asks_once_and_never_hands_back_the_same_token(prefix: str) -> None:
    """A due refresh refuses the token the process holds; the others take the new one."""
    issuer = Issuer()
    a = RedisTokenStore(REDIS_URL, prefix=prefix)
    b = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        t1 = await a.fetch("k", issuer, min_ttl=0)
        assert (await b.fetch("k", issuer, min_ttl=0)).access_token == t1.access_token
        assert issuer.calls == 1
        t2 = await b.fetch("k", issuer, min_ttl=0)  # b's refresh is due: it has t1 already
        assert t2.access_token != t1.access_token
        assert issuer.calls == 2
        assert (await a.fetch("k", issuer, min_ttl=0)).access_token == t2.access_token
        assert issuer.calls == 2
        assert a.stats().store_hits == 1
        assert b.stats().fetches == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_token_times_survive_the_trip_through_redis(prefix: str) -> None:
    """A stored token comes back with the same fields and its expiry on the loop clock."""
    a = RedisTokenStore(REDIS_URL, prefix=prefix)
    b = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        written = await a.fetch("k", Issuer(lifetime=100.0, age=20.0), min_ttl=0)
        read = await b.fetch("k", Issuer(), min_ttl=0)
        assert read.access_token == written.access_token
        assert (read.token_type, read.scope, dict(read.extra)) == (
            "Bearer",
            ("read",),
            {"tenant": "acme"},
        )
        assert read.expires_in == 100.0
        assert abs(read.expires_at - written.expires_at) < 0.05
        assert abs(read.obtained_at - written.obtained_at) < 0.05
        ttl_ms = redis.Redis(host=REDIS_HOST, port=REDIS_PORT).pttl(prefix + "k")
        assert 70_000 < ttl_ms <= 80_000  # the entry expires with the token
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_nearly_expired_or_too_short_entry_is_not_handed_out(prefix: str) -> None:
    """Entries with under 10% of their lifetime (or under min_ttl) left cause a new fetch."""
    a = RedisTokenStore(REDIS_URL, prefix=prefix)
    b = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        await a.fetch("old", Issuer(lifetime=10.0, age=9.3), min_ttl=0)  # 0.7 s of 10 left
        issuer = Issuer()
        await b.fetch("old", issuer, min_ttl=0)
        assert issuer.calls == 1
        await a.fetch("short", Issuer(lifetime=60.0), min_ttl=0)
        await b.fetch("short", issuer, min_ttl=120.0)
        assert issuer.calls == 2
    finally:
        await a.aclose()
        await b.aclose()


async def test_current_argument_overrides_what_the_store_remembers(prefix: str) -> None:
    """With current=None a process that lost its token takes the stored one again."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        issuer = Issuer()
        first = await store.fetch("k", issuer, min_ttl=0)
        again = await store.fetch("k", issuer, min_ttl=0, current=None)
        assert again.access_token == first.access_token
        newer = await store.fetch("k", issuer, min_ttl=0, current=again)
        assert newer.access_token != first.access_token
        assert issuer.calls == 2
    finally:
        await store.aclose()


async def test_invalidate_deletes_only_the_named_token(prefix: str) -> None:
    """invalidate() removes the stored entry only while it still holds that token."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix)
    try:
        token = await store.fetch("k", Issuer(), min_ttl=0)
        await store.invalidate("k", "some-other-token")
        assert prefix + "k" in raw_entries(prefix)
        await store.invalidate("k", token.access_token)
        assert raw_entries(prefix) == {}
    finally:
        await store.aclose()


# -- encryption ------------------------------------------------------------------------


async def test_entries_are_encrypted_and_keys_rotate(prefix: str) -> None:
    """Tokens at rest are unreadable without the key; [new, old] reads old, writes new."""
    old, new = Fernet.generate_key(), Fernet.generate_key()
    writer = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[old])
    rotated = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[new, old])
    try:
        token = await writer.fetch("k1", Issuer(), min_ttl=0)
        raw = raw_entries(prefix)[prefix + "k1"]
        assert token.access_token.encode() not in raw
        assert b"acme" not in raw
        assert token.access_token.encode() in Fernet(old).decrypt(raw.split(b":", 1)[1])

        issuer = Issuer()
        assert (await rotated.fetch("k1", issuer, min_ttl=0)).access_token == token.access_token
        assert issuer.calls == 0
        fresh = await rotated.fetch("k2", issuer, min_ttl=0)
        raw2 = raw_entries(prefix)[prefix + "k2"].split(b":", 1)[1]
        assert fresh.access_token.encode() in Fernet(new).decrypt(raw2)
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(raw2)
    finally:
        await writer.aclose()
        await rotated.aclose()


async def test_wrong_or_missing_key_fetches_its_own_token(
    prefix: str, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that cannot decrypt the entry gets its own token and leaves the entry."""
    idp.add_client("acme", "s3cret")
    right = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[Fernet.generate_key()])
    async with TokenManager(store=right) as tokens:
        tokens.register("acme", creds(idp, "acme"))
        secret = (await tokens.get_token("acme")).access_token
    stored = raw_entries(prefix)
    for keys in ([Fernet.generate_key()], None):
        caplog.clear()
        store = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=keys)
        async with TokenManager(store=store) as tokens:
            tokens.register("acme", creds(idp, "acme"))
            own = (await tokens.get_token("acme")).access_token
        assert own != secret
        assert (store.stats().unreadable, store.stats().fallbacks) == (1, 1)
        assert store.stats().redis_available
        assert "cannot decrypt" in caplog.text
        assert secret not in caplog.text
        assert own not in caplog.text
    assert raw_entries(prefix) == stored  # what the others can read is left alone
    assert idp.token_requests == 3


async def test_key_rotation_never_starves_a_process_with_only_the_old_key(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While [new, old] processes keep the entry fresh, an [old] process still gets tokens."""
    old, new = Fernet.generate_key(), Fernet.generate_key()
    rotated = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[new, old])
    lagging = RedisTokenStore(REDIS_URL, prefix=prefix, encryption_keys=[old])
    fleet, own = Issuer(), Issuer()
    try:
        shared = await rotated.fetch("k", fleet, min_ttl=0)
        got = [await lagging.fetch("k", own, min_ttl=0, current=None) for _ in range(5)]
        assert own.calls == 5
        assert shared.access_token not in {t.access_token for t in got}
        again = await rotated.fetch("k", fleet, min_ttl=0, current=None)
        assert again.access_token == shared.access_token  # the entry was not overwritten
        assert fleet.calls == 1
        stats = lagging.stats()
        assert (stats.unreadable, stats.fallbacks, stats.outages) == (5, 5, 0)
        warnings = [r for r in caplog.records if "cannot decrypt" in r.getMessage()]
        assert len(warnings) == 1  # once per key, not once per call
    finally:
        await rotated.aclose()
        await lagging.aclose()


def test_bad_keys_are_refused_at_construction() -> None:
    """encryption_keys must be a list of real Fernet keys; the key is not echoed."""
    with pytest.raises(ConfigurationError, match="list of Fernet keys"):
        RedisTokenStore(REDIS_URL, encryption_keys=Fernet.generate_key())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"encryption_keys\[1\]") as caught:
        RedisTokenStore(REDIS_URL, encryption_keys=[Fernet.generate_key(), "not-a-key-xyz"])
    assert "not-a-key-xyz" not in str(caught.value)


def test_repr_holds_no_password_or_key() -> None:
    """repr() names the server but not the URL's password or the encryption keys."""
    key = Fernet.generate_key()
    store = RedisTokenStore("redis://user:hunter2@127.0.0.1:6390/0", encryption_keys=[key])
    text = repr(store)
    assert "127.0.0.1:6390" in text
    assert "hunter2" not in text
    assert key.decode() not in text


def test_trio_is_refused_with_a_clear_error() -> None:
    """Under trio, the store raises ConfigurationError naming the asyncio requirement."""

    async def use() -> None:
        store = RedisTokenStore(REDIS_URL)
        try:
            await store.fetch("k", Issuer(), min_ttl=0)
        finally:
            await store.aclose()

    with pytest.raises(ConfigurationError, match="needs the asyncio event loop"):
        anyio.run(use, backend="trio")


# -- a real fleet ----------------------------------------------------------------------


class Worker:
    """A fleet_worker.py subprocess and its stdout, read line by line."""

    def __init__(self, process: Process, log: Path, log_file: IO[bytes]) -> None:
        self.process = process
        self.log = log
        self.log_file = log_file
        assert process.stdout is not None
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def readline(self) -> str:
        try:
            return (await self.stdout.receive_until(b"\n", 1 << 20)).decode()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            raise AssertionError(f"worker died; its stderr:\n{self.log.read_text()}") from None


async def start_workers(count: int, tmp_path: Path, args: list[str]) -> list[Worker]:
    workers = []
    for n in range(count):
        log = tmp_path / f"worker{n}.log"
        log_file = log.open("wb")
        process = await anyio.open_process(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
        workers.append(Worker(process, log, log_file))
    for worker in workers:
        assert (await worker.readline()).strip() == "ready"
    return workers


async def go(workers: list[Worker]) -> None:
    for worker in workers:
        assert worker.process.stdin is not None
        await worker.process.stdin.send(b"go\n")


async def stop(workers: list[Worker]) -> None:
    with anyio.CancelScope(shield=True):
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
            await worker.process.wait()
            await worker.process.aclose()
            worker.log_file.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fleet_of_8_processes_makes_one_request_per_tenant_per_round(
    prefix: str, tmp_path: Path
) -> None:
    """8 processes x 100 tenants: 100 IdP requests at start and 100 at the refresh round."""
    tenants, lifetime = 100, 16.0
    async with IdentityProvider(profile="generic", token_lifetime=lifetime) as idp:
        for i in range(tenants):
            idp.add_client(f"fleet-{i}", "s3cret")
        args = ["--token-url", idp.token_url, "--redis-url", REDIS_URL, "--prefix", prefix]
        # Refresh at 45-50% of the 16 s lifetime, so every process's refresh comes due at
        # nearly the same time. Workers stop once they have seen the second token of every
        # tenant, before a third round could start (14.4 s after the first tokens at the
        # earliest; the cold start may take seconds on a busy machine). Redis timeouts are
        # lenient so that a busy machine is not mistaken for a Redis outage.
        args += ["--tenants", str(tenants), "--client-prefix", "fleet-", "--rounds", "2"]
        args += ["--fraction", "0.5", "--jitter", "0.05", "--interval", "0.1"]
        args += ["--duration", "12", "--timeout", "3"]
        workers = await start_workers(8, tmp_path, args)
        try:
            with anyio.fail_after(60):
                await go(workers)
                for worker in workers:
                    assert (await worker.readline()).strip() == "warm"
                assert idp.token_requests == tenants  # the cold start: one per tenant
                results: list[dict[str, Any]] = [json.loads(await w.readline()) for w in workers]
                for worker in workers:
                    assert await worker.process.wait() == 0, worker.log.read_text()
        finally:
            await stop(workers)
        per_client = {idp.token_requests_for(client_id=f"fleet-{i}") for i in range(tenants)}
        assert idp.token_requests == 2 * tenants  # and the refresh round: one per tenant
        assert per_client == {2}
    assert all(r["errors"] == [] for r in results)
    # Every process saw a second token for every tenant: the refresh round happened.
    assert all(r["distinct_tokens"] == 2 * tenants for r in results)
    assert sum(r["store"]["fetches"] for r in results) == 2 * tenants
    assert sum(r["store"]["fallbacks"] for r in results) == 0
    assert sum(r["manager"]["store_hits"] for r in results) == 2 * 7 * tenants


@pytest.mark.slow
async def test_killed_lock_holder_is_taken_over(prefix: str, tmp_path: Path) -> None:
    """SIGKILL the process fetching under the lock: another gets the token after the lock TTL."""
    lock_ttl = 1.5
    async with IdentityProvider(profile="generic", token_lifetime=300) as idp:
        idp.add_client("fleet-0", "s3cret")
        idp.inject(Fault(delay=5.0), count=1)
        args = ["--token-url", idp.token_url, "--redis-url", REDIS_URL, "--prefix", prefix]
        args += ["--client-prefix", "fleet-", "--lock-ttl", str(lock_ttl)]
        workers = await start_workers(1, tmp_path, args)
        try:
            await go(workers)
            with anyio.fail_after(10), redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as sync:
                while idp.token_requests < 1 or not list(sync.scan_iter(match=prefix + "*:lock")):
                    await anyio.sleep(0.02)
            workers[0].process.send_signal(signal.SIGKILL)
            await workers[0].process.wait()
        finally:
            await stop(workers)

        store = RedisTokenStore(REDIS_URL, prefix=prefix, lock_ttl=lock_ttl)
        async with TokenManager(store=store) as tokens:
            tokens.register("t0", creds(idp, "fleet-0"))
            with anyio.fail_after(25):  # only a guard (a busy machine stretches lock_ttl + 1)
                token = await tokens.get_token("t0")
        assert token.access_token
        stats = store.stats()
        # The expired lock was taken over, not waited out until wait_timeout (a fallback).
        assert (stats.lock_takeovers, stats.fallbacks) == (1, 0)
        assert idp.token_requests == 2


async def test_errors_from_fetch_new_release_the_lock(prefix: str) -> None:
    """A failed fetch propagates its TokenError and frees the lock for the next caller."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix)

    async def failing() -> Token:
        raise TokenError("the IdP said no")

    try:
        with pytest.raises(TokenError, match="said no"):
            await store.fetch("k", failing, min_ttl=0)
        issuer = Issuer()
        with anyio.fail_after(1):
            await store.fetch("k", issuer, min_ttl=0)
        assert issuer.calls == 1
        assert store.stats().lock_takeovers == 0
    finally:
        await store.aclose()


# -- the fleet-wide lock: renewed, never orphaned, waiters bounded --------------------


class Stalled:
    """A `fetch_new` that waits for `release` (or raises `error`) before issuing."""

    def __init__(self, error: Exception | None = None) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.error = error
        self.issuer = Issuer()

    async def __call__(self) -> Token:
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return await self.issuer()


async def watch_renewals(lock: str, count: int, then: anyio.Event) -> None:
    """Set `then` once the lock's PTTL went up `count` times (only a renewal raises it)."""
    async with redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        while (previous := await client.pttl(lock)) <= 0:  # not taken yet
            await anyio.sleep(0.01)
        seen = 0
        while seen < count:
            await anyio.sleep(0.01)
            ttl = await client.pttl(lock)
            assert ttl > 0, "the lock expired while its holder was fetching"
            seen += ttl > previous
            previous = ttl
    then.set()


@pytest.mark.slow
async def test_a_holder_renews_its_lock_so_waiters_never_take_it_over(prefix: str) -> None:
    """A fetch slower than lock_ttl keeps its lock; the waiter gets the holder's token."""
    lock_ttl = 2.0
    a = RedisTokenStore(REDIS_URL, prefix=prefix, lock_ttl=lock_ttl)
    b = RedisTokenStore(REDIS_URL, prefix=prefix, lock_ttl=lock_ttl)
    stalled, waiter = Stalled(), Issuer()
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(a.fetch, "k", stalled, min_ttl=0))
                await stalled.started.wait()
                tg.start_soon(partial(b.fetch, "k", waiter, min_ttl=0))
                # Renewed every lock_ttl / 3: four renewals outlast the lock's own lifetime.
                await watch_renewals(prefix + "k:lock", 4, stalled.release)
        assert stalled.issuer.calls == 1
        assert waiter.calls == 0
        assert b.stats().fetches_avoided == 1
        assert b.stats().lock_takeovers == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_failed_request_under_a_renewed_lock_raises_its_own_error(prefix: str) -> None:
    """A TokenError from fetch_new() while the lock is renewed comes out bare, lock freed."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix, lock_ttl=1.5)
    stalled = Stalled(TokenError("the IdP said no"))
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_renewals, prefix + "k:lock", 1, stalled.release)
                with pytest.raises(TokenError, match="said no") as caught:
                    await store.fetch("k", stalled, min_ttl=0)
        assert type(caught.value) is TokenError  # not an ExceptionGroup around it
        assert raw_entries(prefix) == {}
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
            assert client.exists(prefix + "k:lock") == 0
    finally:
        await store.aclose()


async def test_waiters_give_up_after_wait_timeout(prefix: str) -> None:
    """A holder that takes longer than wait_timeout: the waiter makes its own request."""
    a = RedisTokenStore(REDIS_URL, prefix=prefix)
    b = RedisTokenStore(REDIS_URL, prefix=prefix, wait_timeout=0.3)
    stalled, waiter = Stalled(), Issuer()
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(a.fetch, "k", stalled, min_ttl=0))
                await stalled.started.wait()
                await b.fetch("k", waiter, min_ttl=0)
                assert not stalled.release.is_set()  # the holder is still fetching
                stalled.release.set()
        assert waiter.calls == 1
        assert b.stats().fallbacks == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_waiter_fetches_itself_within_the_managers_fetch_budget(
    idp: IdentityProvider, prefix: str
) -> None:
    """With total_timeout=2 and the lock held elsewhere, the caller gets its own token."""
    idp.add_client("acme", "s3cret")
    store = RedisTokenStore(REDIS_URL, prefix=prefix)  # wait_timeout: 30 s by default
    async with TokenManager(store=store, retry=RetryPolicy(total_timeout=2.0)) as tokens:
        tokens.register("acme", creds(idp, "acme"))
        first = await tokens.get_token("acme")
        [name] = raw_entries(prefix)
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
            client.delete(name)
            client.set(name + ":lock", "another-process", px=60_000)  # fetching, for long
        tokens.invalidate("acme")
        second = await tokens.get_token("acme")
    assert second.access_token != first.access_token
    assert idp.token_requests == 2
    assert store.stats().fallbacks == 1


def test_wait_timeout_must_be_positive() -> None:
    """wait_timeout is a positive number of seconds."""
    with pytest.raises(ConfigurationError, match="wait_timeout"):
        RedisTokenStore(REDIS_URL, wait_timeout=0)


async def test_a_cancelled_holder_frees_its_lock(prefix: str) -> None:
    """Cancelling the caller that holds the lock stops the renewal and deletes the lock."""
    store = RedisTokenStore(REDIS_URL, prefix=prefix, lock_ttl=30.0)
    stalled = Stalled()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(store.fetch, "k", stalled, min_ttl=0))
                await stalled.started.wait()
                tg.cancel_scope.cancel()
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
            assert client.exists(prefix + "k:lock") == 0
        issuer = Issuer()
        with anyio.fail_after(5):
            await store.fetch("k", issuer, min_ttl=0)
        assert issuer.calls == 1
    finally:
        await store.aclose()


async def test_a_rejected_token_is_not_read_back_from_redis(prefix):
    """A 401's retry gets a new token, not the rejected one still in Redis (issue 11: 5)."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", "s3cret")
        rejected: set[str] = set()
        store = RedisTokenStore(f"redis://{REDIS_HOST}:{REDIS_PORT}/0", prefix=prefix)
        async with (
            api_server(lambda token: 401 if token in rejected else 200) as url,
            TokenManager(store=store) as tokens,
        ):
            tokens.register("acme", creds(idp, "acme"))
            rejected.add((await tokens.get_token("acme")).access_token)
            async with tokens.client("acme", base_url=url) as http:
                statuses = [(await http.get("/thing")).status_code for _ in range(10)]
        assert statuses == [200] * 10
        assert idp.token_requests == 2


async def test_coming_back_to_a_tenant_takes_the_stored_token(idp: IdentityProvider, prefix: str):
    """A slot evicted by the max_slots cap, and a new process, take Redis's valid token."""
    for name in ("a", "b"):
        idp.add_client(name, "s3cret")
    policy = RefreshPolicy(max_slots=1)
    async with TokenManager(store=RedisTokenStore(REDIS_URL, prefix=prefix), refresh=policy) as t:
        for name in ("a", "b"):
            t.register(name, creds(idp, name))
        first = await t.get_token("a")
        await t.get_token("b")  # over the cap: "a" is evicted
        assert t.stats().evictions == 1
        assert (await t.get_token("a")).access_token == first.access_token
        assert t.stats().total.store_hits == 1
    async with TokenManager(store=RedisTokenStore(REDIS_URL, prefix=prefix)) as again:
        again.register("a", creds(idp, "a"))
        assert (await again.get_token("a")).access_token == first.access_token
    assert idp.token_requests == 2  # one per tenant
