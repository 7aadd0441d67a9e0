"""The store's connection to Redis: one bounded call at a time, outages noticed and logged
once, refusals about one key told apart from trouble with the whole server.

redis-py is imported only when a store is made (it is the `redis` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio
import sniffio

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["KeyRefused", "RedisConnection", "Scripts", "Unavailable", "backend", "import_redis"]

logger = logging.getLogger("tokenflight")

T = TypeVar("T")

# Take the lock (1), or find it held (0). A lock without expiry was never written by
# tokenflight (or is not even a string): it is replaced (2), else it would block forever.
_TAKE_LOCK = """
local replaced = 0
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('DEL', KEYS[1])
    replaced = 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1 + replaced
end
return 0
"""

_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_COMPARE_AND_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Errors Redis reports about one key: that key is treated as absent, the store stays up.
_PER_KEY_CODES: Final = frozenset({"WRONGTYPE", "NOPERM"})


class Unavailable(Exception):
    """Redis did not answer in time (internal: the caller falls back)."""


class KeyRefused(Exception):
    """Redis refused an operation on one key, such as WRONGTYPE (internal)."""


@dataclass(frozen=True, slots=True)
class Scripts:
    take: AsyncScript
    unlock: AsyncScript
    renew: AsyncScript


class RedisConnection:
    """A `redis.asyncio.Redis` given by the user, or made (and closed) from a URL.

    Args:
        timeout: Seconds to wait for an answer (and, from a URL, for a socket read).
        connect_timeout: Seconds to wait for a connection (from a URL).
        retry_interval: Seconds between tries to reach Redis during an outage.
    """

    def __init__(
        self, client: Redis | str, *, timeout: float, connect_timeout: float, retry_interval: float
    ) -> None:
        redis_module = import_redis()
        self._guard = float(timeout + connect_timeout)
        self._retry_interval = float(retry_interval)
        exceptions = redis_module.exceptions
        self._refusals: tuple[type[BaseException], ...] = (
            exceptions.ResponseError,
            UnicodeDecodeError,  # a client made with decode_responses=True, reading garbage
        )
        self._errors: tuple[type[BaseException], ...] = (
            exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self._url: str | None = None
        self._redis: Redis | None = None
        self._owned = isinstance(client, str)
        if isinstance(client, str):
            self._url = client
            self.where = _describe_url(client)
            self._client_options: dict[str, Any] = {
                "socket_timeout": timeout,
                "socket_connect_timeout": connect_timeout,
                # One quick retry on a dropped connection (a pooled socket to a restarted
                # server), none on timeouts: a slow Redis must not slow token delivery.
                "retry": redis_module.asyncio.retry.Retry(
                    redis_module.backoff.NoBackoff(),
                    1,
                    supported_errors=(exceptions.ConnectionError,),
                ),
            }
        else:
            self._redis = client
            self.where = _describe_client(client)
        self._scripts: Scripts | None = None
        self.down = False
        self.outages = 0
        self._retry_at = 0.0

    def resting(self) -> bool:
        """Whether Redis is down and not to be asked again yet."""
        return self.down and anyio.current_time() < self._retry_at

    def client(self) -> Redis:
        """The client, made on first use.

        Raises:
            ConfigurationError: Not running on asyncio (redis-py has no trio support).
        """
        if backend() != "asyncio":
            raise ConfigurationError(
                "RedisTokenStore needs the asyncio event loop (asyncio or uvloop); "
                "redis-py has no trio support"
            )
        if self._redis is None:
            assert self._url is not None
            self._redis = import_redis().asyncio.Redis.from_url(self._url, **self._client_options)
        return self._redis

    def scripts(self, client: Redis) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(
                take=client.register_script(_TAKE_LOCK),
                unlock=client.register_script(_COMPARE_AND_DELETE),
                renew=client.register_script(_COMPARE_AND_RENEW),
            )
        return self._scripts

    async def call(self, operation: Awaitable[T]) -> T:
        """Await one Redis operation. A refusal about one key raises KeyRefused; any other
        trouble notes an outage and raises Unavailable."""
        try:
            with anyio.fail_after(self._guard):
                result = await operation
        except self._refusals as exc:
            code = _per_key_code(exc)
            if code is None:
                self._mark_down(exc)
                raise Unavailable from exc
            self._mark_up()
            raise KeyRefused(code) from exc
        except self._errors as exc:
            self._mark_down(exc)
            raise Unavailable from exc
        self._mark_up()
        return result

    async def aclose(self) -> None:
        """Close the client if it was made here (from a URL)."""
        client, self._scripts = self._redis, None
        if self._owned and client is not None:
            self._redis = None
            await client.aclose()

    def _mark_up(self) -> None:
        if self.down:
            self.down = False
            logger.info("Redis at %s is available again: sharing tokens again", self.where)

    def _mark_down(self, exc: BaseException) -> None:
        self._retry_at = anyio.current_time() + self._retry_interval
        if self.down:
            return
        self.down = True
        self.outages += 1
        logger.warning(
            "Redis at %s is unavailable (%s); fetching tokens directly, without fleet-wide "
            "sharing, until it answers again",
            self.where,
            type(exc).__name__,
        )


def _per_key_code(exc: BaseException) -> str | None:
    """The error code of a refusal about one key (WRONGTYPE, NOPERM, undecodable bytes);
    None for one about the whole server (OOM, READONLY, BUSY ...)."""
    if isinstance(exc, UnicodeDecodeError):
        return "undecodable value"
    if isinstance(exc, import_redis().exceptions.NoPermissionError):
        return "NOPERM"  # ACLs deny this key
    code = str(exc).split(" ", 1)[0]
    return code if code in _PER_KEY_CODES else None


def backend() -> str | None:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def import_redis() -> Any:
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
