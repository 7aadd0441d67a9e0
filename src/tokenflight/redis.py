"""Fleet mode: processes share tokens, and one token request per key, through Redis.

```python
from tokenflight.redis import RedisTokenStore

store = RedisTokenStore("redis://127.0.0.1:6379/0", encryption_keys=[newest, older])
async with TokenManager(store=store) as tokens:
    ...
```

The manager still answers from process memory; the store is asked only on a local miss
or a due background refresh. It returns the token another process wrote to Redis when
that one is good enough, or else takes a fleet-wide lock for the key, asks the identity
provider once, and writes the result for everybody.

When is a stored token good enough? When it has more than `max(min_ttl, 10% of its
lifetime)` left, and it is newer than the token this process last got from the store
for that key. The second rule is what makes a refresh round cost one request for the
whole fleet: a process whose refresh is due asks again while Redis still holds the very
token it has; that token is refused (so the process takes the lock and fetches), and the
new token it writes is then accepted by every other process whose refresh comes due.

The lock is short-lived (`lock_ttl`, 5 s by default) and renewed by its holder while its
token request runs, so a holder that dies, or a lock taken by a request that timed out on
our side and ran when Redis woke up, costs the fleet at most one `lock_ttl`; the process
whose request timed out also deletes that lock at its next successful Redis operation.
Waiters poll for at most `wait_timeout`, and never past the manager's fetch budget
(`RetryPolicy.total_timeout`): they stop in time to make their own request within it.

A value read from Redis is hostile input: values over 64 KiB are refused unread, the rest
validated field by field, and a corrupt entry (or a key Redis refuses for that key alone,
such as WRONGTYPE) counts as absent: the process takes the lock, fetches, and overwrites
it. An entry this process cannot decrypt (during a key rotation) is left for the
processes that can, and this process makes its own token request.

Needs the asyncio event loop (asyncio or uvloop): redis-py has no trio support. Install
with `pip install 'tokenflight[redis]'`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final, Literal, final

import anyio

from ._errors import ConfigurationError
from ._redis_codec import (
    MAX_ENTRY_BYTES,
    CorruptEntry,
    Entry,
    EntryCodec,
    StoreDecryptionError,
    fingerprint,
)
from ._redis_conn import KeyRefused, RedisConnection, Unavailable, backend, import_redis
from ._token import Token

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStoreStatistics", "RedisTokenStore", "StoreDecryptionError"]

logger = logging.getLogger("tokenflight")

#: A stored token is handed out only with more than this fraction of its lifetime left.
MIN_REMAINING_FRACTION: Final = 0.1

#: Locks taken by requests that timed out, remembered for deletion (oldest dropped first).
MAX_ORPHANS: Final = 1024
#: A waiter's own request gets at least half the caller's time left, and this at most.
_OWN_FETCH_MARGIN: Final = 5.0


class _Unset(Enum):
    UNSET = "unset"


class _Unreadable(Exception):
    """The stored entry is sealed with a key this process lacks (internal)."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStoreStatistics:
    """A snapshot of one `RedisTokenStore`'s counters (this process only).

    Attributes:
        store_hits: Fetches answered from Redis without asking the identity provider.
        fetches: Token requests this process made (calls of `fetch_new`).
        fetches_avoided: Store hits that waited for another process's request to land.
        fallbacks: Token requests made without the fleet-wide lock, because Redis was
            unavailable, refused the key's lock, the lock holder did not deliver within
            `wait_timeout`, or the stored entry was unreadable.
        lock_takeovers: Locks taken after the previous holder left without writing a token
            (it died, or its request failed).
        outages: Times Redis became unavailable.
        unreadable: Stored entries this process could not decrypt (sealed with a key it
            lacks); each time, it made its own token request and left the entry alone.
        redis_available: Whether Redis answered the last time it was asked.
    """

    store_hits: int = 0
    fetches: int = 0
    fetches_avoided: int = 0
    fallbacks: int = 0
    lock_takeovers: int = 0
    outages: int = 0
    unreadable: int = 0
    redis_available: bool = True


@dataclass(slots=True)
class _Held:
    """The token this process last got for a key (a digest, never the token)."""

    digest: bytes
    obtained_wall: float
    expires_wall: float


@final
class RedisTokenStore:
    """A `TokenStore` in Redis: tokens and a fleet-wide single flight per key.

    Pass it to `TokenManager(store=...)`; the manager closes it. It needs the asyncio
    event loop (asyncio or uvloop): redis-py has no trio support, and using it under trio
    raises `ConfigurationError`.

    If Redis is down or slow, token delivery goes on: each process asks the identity
    provider itself (a warning is logged once per outage), and sharing resumes when Redis
    answers again. A corrupt entry, or one key that Redis refuses (WRONGTYPE), affects
    that key only: it counts as absent and is overwritten. An entry this process cannot
    decrypt (during a key rotation) makes it ask the identity provider itself for that
    key, leaving the entry to the processes that can read it (a warning once per key,
    counted in `stats().unreadable`).

    Args:
        client: A `redis.asyncio.Redis` (not closed by the store; give it short socket
            timeouts), or a URL such as `redis://host:6379/0` (the store makes and closes
            the client, with the timeouts below).
        prefix: Prepended to every Redis key. The rest of a key is a SHA-256 digest that
            holds no secret.
        encryption_keys: Fernet keys (`cryptography.fernet.Fernet.generate_key()`), newest
            first. Tokens are written encrypted with the first and read with any. None
            stores tokens in the clear.
        lock_ttl: Seconds a fleet-wide lock lives unless its holder renews it (every
            `lock_ttl / 3` while its token request runs). A holder that dies, or a lock
            orphaned by a request that timed out, delays the others by at most this. Keep
            it above a few times `timeout + connect_timeout`.
        wait_timeout: Longest wait for another process's token before making our own
            request. A manager's fetch also ends the wait in time for its own request
            within its budget (`RetryPolicy.total_timeout`), whichever comes first.
        timeout: Seconds to wait for a Redis answer before falling back.
        connect_timeout: Seconds to wait for a connection to Redis.
        poll_interval: Longest pause between looks while another process fetches.
        retry_interval: Seconds between tries to reach Redis during an outage.

    Raises:
        ConfigurationError: An argument is out of range or a key is not a Fernet key.
        ImportError: The `redis` extra is not installed.
    """

    def __init__(
        self,
        client: Redis | str,
        *,
        prefix: str = "tokenflight:",
        encryption_keys: Sequence[str | bytes] | None = None,
        lock_ttl: float = 5.0,
        wait_timeout: float = 30.0,
        timeout: float = 0.5,
        connect_timeout: float = 0.5,
        poll_interval: float = 0.05,
        retry_interval: float = 1.0,
    ) -> None:
        import_redis()  # first: a missing extra says so before any argument is checked
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string")
        for name, value in (
            ("lock_ttl", lock_ttl),
            ("wait_timeout", wait_timeout),
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("poll_interval", poll_interval),
        ):
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigurationError(f"RedisTokenStore {name} must be a positive number")
        if not isinstance(retry_interval, (int, float)) or not 0 <= retry_interval < 3600:
            raise ConfigurationError("RedisTokenStore retry_interval must be in [0, 3600)")
        self._codec = EntryCodec(encryption_keys)
        self._prefix = prefix
        self._lock_ms = max(1, round(lock_ttl * 1000))
        self._lock_ttl = float(lock_ttl)
        self._wait_timeout = float(wait_timeout)
        self._poll = float(poll_interval)
        self._redis = RedisConnection(
            client, timeout=timeout, connect_timeout=connect_timeout, retry_interval=retry_interval
        )
        self._held: dict[str, _Held] = {}
        self._remembered = 0
        self._orphans: dict[tuple[str, str], None] = {}  # (lock, owner), oldest first
        self._warned: set[tuple[str, str]] = set()  # (problem, Redis key)
        self._hits = self._fetches = self._avoided = 0
        self._fallbacks = self._takeovers = self._unreadable = 0

    def __repr__(self) -> str:
        return (
            f"<RedisTokenStore {self._redis.where} prefix={self._prefix!r} "
            f"encrypted={self._codec.encrypted} available={not self._redis.down}>"
        )

    def stats(self) -> RedisStoreStatistics:
        """A snapshot of this store's counters."""
        return RedisStoreStatistics(
            store_hits=self._hits,
            fetches=self._fetches,
            fetches_avoided=self._avoided,
            fallbacks=self._fallbacks,
            lock_takeovers=self._takeovers,
            outages=self._redis.outages,
            unreadable=self._unreadable,
            redis_available=not self._redis.down,
        )

    # -- the TokenStore protocol -----------------------------------------------------

    async def fetch(
        self,
        key: str,
        fetch_new: Callable[[], Awaitable[Token]],
        *,
        min_ttl: float,
        current: Token | Literal[_Unset.UNSET] | None = _Unset.UNSET,
        deadline: float | None = None,
    ) -> Token:
        """Return the fleet's token for `key`, or fetch one under the fleet-wide lock.

        Args:
            key: The slot's store key (a digest holding no secret).
            fetch_new: Asks the identity provider; called at most once.
            min_ttl: Seconds the token must stay valid.
            current: The token the caller holds for `key`, if it says; by default the
                store remembers the token it last returned for `key`.
            deadline: Loop time (`anyio.current_time()`) by which the caller needs the
                token. A wait for another process's fetch ends early enough to make our
                own request before it (and after `wait_timeout` in any case).

        Raises:
            ConfigurationError: Not running on asyncio.
            TokenError: From `fetch_new`.
        """
        client = self._redis.client()
        if self._redis.resting():
            return await self._fallback(key, fetch_new)
        name = self._prefix + key
        held = self._held_for(key, current)
        try:
            entry = await self._read(client, name)
            await self._release_orphans(client)
            if self._is_usable(entry, held, min_ttl):
                assert entry is not None
                return self._hit(key, entry, waited=False)
            return await self._fetch_locked(client, key, name, fetch_new, min_ttl, held, deadline)
        except Unavailable:
            return await self._fallback(key, fetch_new)
        except _Unreadable:
            self._note_unreadable(name)
            return await self._fallback(key, fetch_new)
        except KeyRefused as exc:
            self._warn_once(
                "lock",
                name,
                "Redis refused the fleet-wide lock %s:lock (%s); fetching without it",
                name,
                exc,
            )
            return await self._fallback(key, fetch_new)

    async def invalidate(self, key: str, access_token: str) -> None:
        """Delete the stored token for `key` if it is still `access_token`. Never raises."""
        if backend() != "asyncio" or self._redis.resting():
            return
        client = self._redis.client()
        name = self._prefix + key
        try:
            raw = await self._redis.call(client.getrange(name, 0, MAX_ENTRY_BYTES))
            if not raw:
                return
            try:
                entry = self._codec.decode(raw)
            except StoreDecryptionError:
                return
            except CorruptEntry:
                entry = None
            if entry is None or entry.token.access_token == access_token:
                await self._redis.call(self._redis.scripts(client).unlock(keys=[name], args=[raw]))
        except (Unavailable, KeyRefused):
            pass

    async def aclose(self) -> None:
        """Close the Redis client if the store made it (from a URL)."""
        await self._redis.aclose()

    # -- steps -----------------------------------------------------------------------

    async def _fetch_locked(
        self,
        client: Redis,
        key: str,
        name: str,
        fetch_new: Callable[[], Awaitable[Token]],
        min_ttl: float,
        held: _Held | None,
        budget: float | None,
    ) -> Token:
        """Take the key's lock and fetch, or wait (see `_wait_deadline`) for the holder's."""
        lock = name + ":lock"
        owner = secrets.token_hex(16)
        started = anyio.current_time()
        deadline, why = self._wait_deadline(started, budget)
        delay = self._poll / 8
        waited = False
        while True:
            if await self._take_lock(client, lock, owner):
                return await self._fetch_holding(
                    client, key, name, lock, owner, fetch_new, min_ttl, held, waited=waited
                )
            waited = True
            if anyio.current_time() >= deadline:
                logger.warning(
                    "gave up waiting for another process's token after %.1fs (%s); "
                    "fetching without the fleet-wide lock",
                    anyio.current_time() - started,
                    why,
                )
                return await self._fallback(key, fetch_new)
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._poll)
            entry = await self._read(client, name)
            if self._is_usable(entry, held, min_ttl):
                assert entry is not None
                return self._hit(key, entry, waited=True)

    def _wait_deadline(self, now: float, budget: float | None) -> tuple[float, str]:
        """When a waiter stops waiting for another process's fetch and makes its own, and
        why: after `wait_timeout`, or earlier, before the caller's `budget` (a loop time)
        by half the time left to it (at most `_OWN_FETCH_MARGIN`) for its own request.
        """
        until = now + self._wait_timeout
        if budget is None:
            return until, "wait_timeout"
        margin = min(_OWN_FETCH_MARGIN, max(budget - now, 0.0) / 2)
        if budget - margin < until:
            return budget - margin, "to keep within the fetch budget"
        return until, "wait_timeout"

    async def _fetch_holding(
        self,
        client: Redis,
        key: str,
        name: str,
        lock: str,
        owner: str,
        fetch_new: Callable[[], Awaitable[Token]],
        min_ttl: float,
        held: _Held | None,
        *,
        waited: bool,
    ) -> Token:
        """Holding the lock: re-read (it may have just landed), else fetch and write."""
        try:
            entry = await self._read(client, name)
            if self._is_usable(entry, held, min_ttl):
                assert entry is not None
                return self._hit(key, entry, waited=waited)
            if waited:
                self._takeovers += 1
            self._fetches += 1
            token = await self._fetch_renewing(client, lock, owner, fetch_new)
            await self._write(client, key, name, token)
            return token
        finally:
            with anyio.CancelScope(shield=True):
                await self._unlock(client, lock, owner)

    async def _fetch_renewing(
        self, client: Redis, lock: str, owner: str, fetch_new: Callable[[], Awaitable[Token]]
    ) -> Token:
        """Call `fetch_new()` while a child task renews the lock; its errors come out bare.

        An exception raised in a task group's body comes out wrapped in an ExceptionGroup,
        so the outcome is caught inside and raised again outside the group.
        """
        outcome: Token | Exception
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew, client, lock, owner)
            try:
                outcome = await fetch_new()
            except Exception as exc:
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _renew(self, client: Redis, lock: str, owner: str) -> None:
        """Every lock_ttl/3, extend the lock by lock_ttl while it is still ours."""
        while True:
            await anyio.sleep(self._lock_ttl / 3)
            try:
                renewed = await self._redis.call(
                    self._redis.scripts(client).renew(keys=[lock], args=[owner, self._lock_ms])
                )
            except (Unavailable, KeyRefused):
                continue  # the lock lives lock_ttl from its last renewal: try again
            if not renewed:
                return  # it expired (Redis stalled): another process may be fetching too

    async def _take_lock(self, client: Redis, lock: str, owner: str) -> bool:
        """Try to take the lock once. A try that times out may still take it when Redis
        wakes up: that (lock, owner) is remembered and released at the next chance."""
        try:
            taken = await self._redis.call(
                self._redis.scripts(client).take(keys=[lock], args=[owner, self._lock_ms])
            )
        except Unavailable:
            self._remember_orphan(lock, owner)
            raise
        if taken == 2:
            self._warn_once("lock", lock, "replaced %s, a lock without expiry", lock)
        return bool(taken)

    async def _unlock(self, client: Redis, lock: str, owner: str) -> None:
        try:
            await self._redis.call(self._redis.scripts(client).unlock(keys=[lock], args=[owner]))
        except Unavailable:
            self._remember_orphan(lock, owner)  # it expires by itself, or goes next time
        except KeyRefused:
            pass

    async def _release_orphans(self, client: Redis) -> None:
        """Delete the locks this process may hold from requests that timed out."""
        for lock, owner in list(self._orphans):
            with contextlib.suppress(KeyRefused):
                await self._redis.call(
                    self._redis.scripts(client).unlock(keys=[lock], args=[owner])
                )
            self._orphans.pop((lock, owner), None)

    async def _fallback(self, key: str, fetch_new: Callable[[], Awaitable[Token]]) -> Token:
        self._fallbacks += 1
        self._fetches += 1
        token = await fetch_new()
        self._remember(key, Entry.from_token(token, **_now()))
        return token

    async def _read(self, client: Redis, name: str) -> Entry | None:
        """The stored entry; None if absent or corrupt (logged). Raises _Unreadable."""
        try:
            # At most MAX_ENTRY_BYTES + 1 bytes: a larger value is refused unread.
            raw = await self._redis.call(client.getrange(name, 0, MAX_ENTRY_BYTES))
            entry = self._codec.decode(raw)
        except (KeyRefused, CorruptEntry) as exc:
            self._warn_once(
                "corrupt",
                name,
                "ignoring the entry %s in the shared store: %s; it is replaced by a new token",
                name,
                exc,
            )
            return None
        except StoreDecryptionError as exc:
            raise _Unreadable from exc
        if self._warned:
            self._warned.difference_update({("corrupt", name), ("unreadable", name)})
        return entry

    async def _write(self, client: Redis, key: str, name: str, token: Token) -> None:
        now = _now()
        entry = Entry.from_token(token, **now)
        self._remember(key, entry)
        if entry.remaining(now["wall_now"]) <= 0:
            return
        # On trouble the token is still delivered; the next process fetches its own.
        with contextlib.suppress(Unavailable, KeyRefused):
            await self._redis.call(
                client.set(name, self._codec.encode(entry), pxat=int(entry.expires_wall * 1000))
            )

    def _hit(self, key: str, entry: Entry, *, waited: bool) -> Token:
        self._hits += 1
        self._avoided += waited
        self._remember(key, entry)
        return entry.to_token(**_now())

    # -- bookkeeping (no I/O) --------------------------------------------------------

    def _is_usable(self, entry: Entry | None, held: _Held | None, min_ttl: float) -> bool:
        """Whether a stored entry may be handed out (the rule in the module docstring)."""
        if entry is None:
            return False
        left = entry.remaining(time.time())
        if left <= max(min_ttl, MIN_REMAINING_FRACTION * entry.token.expires_in):
            return False
        if held is None:
            return True
        # The caller already has this token, or a newer one: it wants a newer one.
        return (
            entry.obtained_wall > held.obtained_wall
            and fingerprint(entry.token.access_token) != held.digest
        )

    def _held_for(self, key: str, current: Token | Literal[_Unset.UNSET] | None) -> _Held | None:
        if current is None:
            return None
        if current is not _Unset.UNSET:
            entry = Entry.from_token(current, **_now())
            return _Held(fingerprint(current.access_token), entry.obtained_wall, 0.0)
        held = self._held.get(key)
        if held is not None and held.expires_wall <= time.time():
            del self._held[key]
            return None
        return held

    def _note_unreadable(self, name: str) -> None:
        self._unreadable += 1
        self._warn_once(
            "unreadable",
            name,
            "cannot decrypt the token stored at %s with this process's encryption_keys; "
            "asking the identity provider directly for that key and leaving the entry to the "
            "processes that can read it (check that every process has the same keys, newest "
            "first, and that retired keys stay listed until their tokens expire)",
            name,
        )

    def _remember_orphan(self, lock: str, owner: str) -> None:
        if len(self._orphans) >= MAX_ORPHANS:
            del self._orphans[next(iter(self._orphans))]
        self._orphans[lock, owner] = None

    def _warn_once(self, problem: str, name: str, message: str, *args: object) -> None:
        """Log a warning once per (problem, key) until the key reads well again."""
        if (problem, name) in self._warned:
            return
        if len(self._warned) >= 4096:
            self._warned.clear()
        self._warned.add((problem, name))
        logger.warning(message, *args)

    def _remember(self, key: str, entry: Entry) -> None:
        self._held[key] = _Held(
            fingerprint(entry.token.access_token), entry.obtained_wall, entry.expires_wall
        )
        self._remembered += 1
        if self._remembered % 4096 == 0:  # keep memory bounded as keys come and go
            wall_now = time.time()
            for name in [k for k, h in self._held.items() if h.expires_wall <= wall_now]:
                del self._held[name]


def _now() -> dict[str, float]:
    return {"loop_now": anyio.current_time(), "wall_now": time.time()}
