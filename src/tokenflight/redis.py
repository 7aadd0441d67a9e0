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
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, final
from urllib.parse import urlsplit

import anyio
import sniffio

from ._errors import ConfigurationError
from ._redis_codec import Entry, EntryCodec, StoreDecryptionError, fingerprint
from ._token import Token

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStoreStatistics", "RedisTokenStore", "StoreDecryptionError"]

logger = logging.getLogger("tokenflight")

T = TypeVar("T")

#: A stored token is handed out only with more than this fraction of its lifetime left.
MIN_REMAINING_FRACTION: Final = 0.1

_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Unset(Enum):
    UNSET = "unset"


class _Unavailable(Exception):
    """Redis did not answer in time (internal: the caller falls back)."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStoreStatistics:
    """A snapshot of one `RedisTokenStore`'s counters (this process only).

    Attributes:
        store_hits: Fetches answered from Redis without asking the identity provider.
        fetches: Token requests this process made (calls of `fetch_new`).
        fetches_avoided: Store hits that waited for another process's request to land.
        fallbacks: Token requests made without the fleet-wide lock, because Redis was
            unavailable or the lock holder never delivered.
        lock_takeovers: Locks taken after the previous holder left without writing a token
            (it died, or its request failed).
        outages: Times Redis became unavailable.
        redis_available: Whether Redis answered the last time it was asked.
    """

    store_hits: int = 0
    fetches: int = 0
    fetches_avoided: int = 0
    fallbacks: int = 0
    lock_takeovers: int = 0
    outages: int = 0
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
    answers again.

    Args:
        client: A `redis.asyncio.Redis` (not closed by the store; give it short socket
            timeouts), or a URL such as `redis://host:6379/0` (the store makes and closes
            the client, with the timeouts below).
        prefix: Prepended to every Redis key. The rest of a key is a SHA-256 digest that
            holds no secret.
        encryption_keys: Fernet keys (`cryptography.fernet.Fernet.generate_key()`), newest
            first. Tokens are written encrypted with the first and read with any. None
            stores tokens in the clear.
        lock_ttl: Seconds a fleet-wide lock lives; if its holder dies, another process
            takes over after this. Keep it above the manager's fetch budget
            (`RetryPolicy.total_timeout`, 30 s by default).
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
        lock_ttl: float = 35.0,
        timeout: float = 0.5,
        connect_timeout: float = 0.5,
        poll_interval: float = 0.05,
        retry_interval: float = 1.0,
    ) -> None:
        redis_module = _import_redis()
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string")
        for name, value in (
            ("lock_ttl", lock_ttl),
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
        self._guard = float(timeout + connect_timeout)
        self._poll = float(poll_interval)
        self._retry_interval = float(retry_interval)
        self._errors: tuple[type[BaseException], ...] = (
            redis_module.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self._url: str | None = None
        self._redis: Redis | None = None
        self._owned = isinstance(client, str)
        if isinstance(client, str):
            self._url = client
            self._where = _describe_url(client)
            self._client_options: dict[str, Any] = {
                "socket_timeout": timeout,
                "socket_connect_timeout": connect_timeout,
                # One quick retry on a dropped connection (a pooled socket to a restarted
                # server), none on timeouts: a slow Redis must not slow token delivery.
                "retry": redis_module.asyncio.retry.Retry(
                    redis_module.backoff.NoBackoff(),
                    1,
                    supported_errors=(redis_module.exceptions.ConnectionError,),
                ),
            }
        else:
            self._redis = client
            self._where = _describe_client(client)
        self._unlock: AsyncScript | None = None
        self._held: dict[str, _Held] = {}
        self._remembered = 0
        self._down = False
        self._retry_at = 0.0
        self._hits = self._fetches = self._avoided = 0
        self._fallbacks = self._takeovers = self._outages = 0

    def __repr__(self) -> str:
        return (
            f"<RedisTokenStore {self._where} prefix={self._prefix!r} "
            f"encrypted={self._codec.encrypted} available={not self._down}>"
        )

    def stats(self) -> RedisStoreStatistics:
        """A snapshot of this store's counters."""
        return RedisStoreStatistics(
            store_hits=self._hits,
            fetches=self._fetches,
            fetches_avoided=self._avoided,
            fallbacks=self._fallbacks,
            lock_takeovers=self._takeovers,
            outages=self._outages,
            redis_available=not self._down,
        )

    # -- the TokenStore protocol -----------------------------------------------------

    async def fetch(
        self,
        key: str,
        fetch_new: Callable[[], Awaitable[Token]],
        *,
        min_ttl: float,
        current: Token | Literal[_Unset.UNSET] | None = _Unset.UNSET,
    ) -> Token:
        """Return the fleet's token for `key`, or fetch one under the fleet-wide lock.

        Args:
            key: The slot's store key (a digest holding no secret).
            fetch_new: Asks the identity provider; called at most once.
            min_ttl: Seconds the token must stay valid.
            current: The token the caller holds for `key`, if it says; by default the
                store remembers the token it last returned for `key`.

        Raises:
            ConfigurationError: Not running on asyncio.
            StoreDecryptionError: The stored token is encrypted with a key we lack.
            TokenError: From `fetch_new`.
        """
        client = self._client()
        if self._down and anyio.current_time() < self._retry_at:
            return await self._fallback(key, fetch_new)
        name = self._prefix + key
        held = self._held_for(key, current)
        try:
            entry = await self._read(client, name)
            if self._is_usable(entry, held, min_ttl):
                assert entry is not None
                return self._hit(key, entry, waited=False)
            return await self._fetch_locked(client, key, name, fetch_new, min_ttl, held)
        except _Unavailable:
            return await self._fallback(key, fetch_new)

    async def invalidate(self, key: str, access_token: str) -> None:
        """Delete the stored token for `key` if it is still `access_token`. Never raises."""
        if _backend() != "asyncio" or (self._down and anyio.current_time() < self._retry_at):
            return
        client = self._client()
        name = self._prefix + key
        try:
            raw = await self._call(client.get(name))
            if raw is None:
                return
            try:
                entry = self._codec.decode(raw)
            except StoreDecryptionError:
                return
            if entry is None or entry.token.access_token == access_token:
                await self._call(self._script(client)(keys=[name], args=[raw]))
        except _Unavailable:
            pass

    async def aclose(self) -> None:
        """Close the Redis client if the store made it (from a URL)."""
        client, self._unlock = self._redis, None
        if self._owned and client is not None:
            self._redis = None
            await client.aclose()

    # -- steps -----------------------------------------------------------------------

    async def _fetch_locked(
        self,
        client: Redis,
        key: str,
        name: str,
        fetch_new: Callable[[], Awaitable[Token]],
        min_ttl: float,
        held: _Held | None,
    ) -> Token:
        """Take the key's lock and fetch, or wait for the holder's token to land."""
        lock = name + ":lock"
        owner = secrets.token_hex(16)
        deadline = anyio.current_time() + 2 * self._lock_ttl
        delay = self._poll / 8
        waited = False
        while True:
            if await self._call(client.set(lock, owner, nx=True, px=self._lock_ms)):
                return await self._fetch_holding(
                    client, key, name, lock, owner, fetch_new, min_ttl, held, waited=waited
                )
            waited = True
            if anyio.current_time() >= deadline:
                logger.warning(
                    "gave up waiting for another process's token after %.1fs; fetching "
                    "without the fleet-wide lock",
                    2 * self._lock_ttl,
                )
                return await self._fallback(key, fetch_new)
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._poll)
            entry = await self._read(client, name)
            if self._is_usable(entry, held, min_ttl):
                assert entry is not None
                return self._hit(key, entry, waited=True)

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
            token = await fetch_new()
            await self._write(client, key, name, token)
            return token
        finally:
            # On trouble the lock expires by itself.
            with anyio.CancelScope(shield=True), contextlib.suppress(_Unavailable):
                await self._call(self._script(client)(keys=[lock], args=[owner]))

    async def _fallback(self, key: str, fetch_new: Callable[[], Awaitable[Token]]) -> Token:
        self._fallbacks += 1
        self._fetches += 1
        token = await fetch_new()
        self._remember(key, Entry.from_token(token, **_now()))
        return token

    async def _read(self, client: Redis, name: str) -> Entry | None:
        raw = await self._call(client.get(name))
        return None if raw is None else self._codec.decode(raw)

    async def _write(self, client: Redis, key: str, name: str, token: Token) -> None:
        now = _now()
        entry = Entry.from_token(token, **now)
        self._remember(key, entry)
        if entry.remaining(now["wall_now"]) <= 0:
            return
        # On trouble the token is still delivered; the next process fetches its own.
        with contextlib.suppress(_Unavailable):
            await self._call(
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

    def _remember(self, key: str, entry: Entry) -> None:
        self._held[key] = _Held(
            fingerprint(entry.token.access_token), entry.obtained_wall, entry.expires_wall
        )
        self._remembered += 1
        if self._remembered % 4096 == 0:  # keep memory bounded as keys come and go
            wall_now = time.time()
            for name in [k for k, h in self._held.items() if h.expires_wall <= wall_now]:
                del self._held[name]

    # -- Redis plumbing --------------------------------------------------------------

    def _client(self) -> Redis:
        if _backend() != "asyncio":
            raise ConfigurationError(
                "RedisTokenStore needs the asyncio event loop (asyncio or uvloop); "
                "redis-py has no trio support"
            )
        if self._redis is None:
            assert self._url is not None
            self._redis = _import_redis().asyncio.Redis.from_url(self._url, **self._client_options)
        return self._redis

    def _script(self, client: Redis) -> AsyncScript:
        if self._unlock is None:
            self._unlock = client.register_script(_COMPARE_AND_DELETE)
        return self._unlock

    async def _call(self, operation: Awaitable[T]) -> T:
        """Await one Redis operation; on any trouble, note the outage and raise _Unavailable."""
        try:
            with anyio.fail_after(self._guard):
                result = await operation
        except self._errors as exc:
            self._mark_down(exc)
            raise _Unavailable from exc
        if self._down:
            self._down = False
            logger.info("Redis at %s is available again: sharing tokens again", self._where)
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self._retry_at = anyio.current_time() + self._retry_interval
        if self._down:
            return
        self._down = True
        self._outages += 1
        logger.warning(
            "Redis at %s is unavailable (%s); fetching tokens directly, without fleet-wide "
            "sharing, until it answers again",
            self._where,
            type(exc).__name__,
        )


def _now() -> dict[str, float]:
    return {"loop_now": anyio.current_time(), "wall_now": time.time()}


def _backend() -> str | None:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
    except ImportError as exc:
        raise ImportError(
            "RedisTokenStore needs the redis package: pip install 'tokenflight[redis]'"
        ) from exc
    return redis


def _describe_url(url: str) -> str:
    """host:port of a Redis URL, without the user name or password it may hold."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


def _describe_client(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
