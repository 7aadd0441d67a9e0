"""Helpers of the Redis store's tests: their values, and a redis-server of a test's own."""

from __future__ import annotations

import secrets
import subprocess
import time

import anyio
import redis

from tokenflight import Token

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def answers(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers a PING within half a second."""
    try:
        with redis.Redis(
            host=REDIS_HOST, port=port, socket_connect_timeout=0.5, socket_timeout=0.5
        ) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A redis-server of its own on `port`, without persistence, once it answers."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", REDIS_HOST, *NO_PERSISTENCE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if answers(port):
            return server
        if server.poll() is not None:
            break
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def raw_entries(prefix: str, port: int = REDIS_PORT) -> dict[str, bytes]:
    """The token entries (not the locks) under `prefix` on the Redis at `port`."""
    with redis.Redis(host=REDIS_HOST, port=port, socket_timeout=1) as client:
        return {
            key.decode(): client.get(key)
            for key in client.scan_iter(match=prefix + "*")
            if not key.endswith(b":lock")
        }


def make_token(access_token: str, lifetime: float = 60.0, age: float = 0.0) -> Token:
    """A token of `lifetime` seconds, obtained `age` seconds ago."""
    now = anyio.current_time()
    return Token(
        access_token=access_token,
        expires_in=lifetime,
        obtained_at=now - age,
        expires_at=now - age + lifetime,
        scope=("read",),
        extra={"tenant": "acme"},
    )


class Issuer:
    """A `fetch_new` that counts its calls and issues numbered tokens."""

    def __init__(self, lifetime: float = 60.0, age: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.age = age

    async def __call__(self) -> Token:
        self.calls += 1
        return make_token(f"tok-{secrets.token_hex(8)}", self.lifetime, self.age)
