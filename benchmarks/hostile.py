"""Hostile identity providers and resolvers: what each attack costs the process.

    python benchmarks/hostile.py          # every attack, one table
    python benchmarks/hostile.py --backend trio

For each attack on one tenant, while a tenant on a healthy IdP keeps fetching new tokens
through the same manager: the typed error the attack ends in, the peak memory it added
(tracemalloc, in a second run of the same attack), two views of event-loop blocking from
a ticker task that sleeps 2 ms at a time: the longest stretch of CPU the loop's thread
spent between two ticks (thread CPU time, which a busy machine does not inflate: what the
tests bound) and the longest tick lag (how late a tick came, wall clock: what other tasks
felt), and the slowest healthy token fetch during the attack.

`store_and_api_attacks()` adds a Redis store that stops answering (asyncio only) and an
API that answers every call with a 401 whose body is a gzip bomb.

`tests/hostile/test_attacks.py` runs the same attacks and asserts the bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import gzip
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretPost,
    RetryPolicy,
    Token,
    TokenError,
    TokenManager,
)
from tokenflight.testing import IdentityProvider

SECRET = "hostile-secret-never-sent-away"
BUDGET = 2.0  # the manager's fetch budget in these runs (RetryPolicy.total_timeout)


@functools.cache
def bomb(decoded_mb: int, layers: int = 1) -> bytes:
    """`decoded_mb` MB of zeros, gzipped `layers` times (made in chunks, never whole)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    data = b"".join(compressor.compress(chunk) for _ in range(decoded_mb)) + compressor.flush()
    for _ in range(layers - 1):
        data = gzip.compress(data, 9)
    return data


def raw_response(body: bytes, *, status: str = "200 OK", headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 response, byte for byte, that closes its connection."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Hostile:
    """A raw server's state: requests seen, and the gate its answers wait behind."""

    url: str = ""
    received: list[bytes] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)


@asynccontextmanager
async def hostile_server(answer: bytes | None, *, gated: bool = False) -> AsyncIterator[Hostile]:
    """A server on 127.0.0.1 answering each request with `answer` (None: never answers).

    With `gated`, answers wait for `release` (so an attack can be held in flight).
    """
    state = Hostile()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(30):
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(body) < length:
                    body += await stream.receive()
                state.received.append(head + b"\r\n\r\n" + body)
                state.arrived.set()
                if gated:
                    await state.release.wait()
                if answer is None:
                    await anyio.sleep_forever()
                    return
                view = memoryview(answer)
                with contextlib.suppress(anyio.BrokenResourceError):  # refused mid-way
                    for start in range(0, len(view), 65536):  # never buffered whole here
                        # anyio annotates `bytes`; its streams send any buffer, uncopied.
                        await stream.send(view[start : start + 65536])  # type: ignore[arg-type]

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    state.url = f"http://127.0.0.1:{port}"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield state
        tg.cancel_scope.cancel()


@dataclass(frozen=True)
class Attack:
    """One attack: what the hostile server answers, and how the victim tenant is set up."""

    name: str
    answer: bytes | None = None
    discovered: bool = False  # the victim's issuer is the hostile server
    hanging_resolver: bool = False
    redis_stall: bool = False  # the manager's Redis store stops answering (SIGSTOP)
    api_calls: int = 0  # the victim calls its API (the hostile server) this many times


def attacks(scale: int = 1024) -> list[Attack]:
    """The attacks, with bombs inflating to `scale` MB."""
    nested = b"[" * 100_000 + b"]" * 100_000
    crlf = b'{"access_token": "a\\r\\nSet-Cookie: x", "token_type": "Bearer", "expires_in": 60}'
    return [
        Attack(
            f"gzip bomb, 2 layers, {scale:,} MB (token endpoint)",
            raw_response(bomb(scale, 2), headers={"Content-Encoding": "gzip, gzip"}),
        ),
        Attack(
            f"gzip bomb, {scale:,} MB (discovery)",
            raw_response(bomb(scale), headers={"Content-Encoding": "gzip"}),
            discovered=True,
        ),
        Attack("50 MB plain body (token endpoint)", raw_response(bytes(50 << 20), headers={})),
        Attack("JSON nested 100,000 deep (discovery)", raw_response(nested, headers={})),
        Attack("JSON nested 100,000 deep (token endpoint)", raw_response(nested, headers={})),
        Attack("token with CR LF (header injection)", raw_response(crlf, headers={})),
        Attack(
            "307 redirect to another host",
            raw_response(b"", status="307 Temporary", headers={"Location": "http://evil.test/"}),
        ),
        Attack("token endpoint that never answers", None),
        Attack("resolver that never answers", hanging_resolver=True),
    ]


def store_and_api_attacks(scale: int = 1024) -> list[Attack]:
    """Attacks on what surrounds the IdP: the shared store, and the API a token is for.

    The Redis stall needs the asyncio loop (redis-py) and a `redis-server` binary.
    """
    headers = {"Content-Encoding": "gzip", "WWW-Authenticate": 'Bearer error="invalid_token"'}
    return [
        Attack("Redis store stalled (SIGSTOP) during fetches", redis_stall=True),
        Attack(
            f"API answering 50 calls with 401, each a {scale // 4:,} MB gzip bomb",
            raw_response(bomb(scale // 4), status="401 Unauthorized", headers=headers),
            api_calls=50,
        ),
    ]


@dataclass(frozen=True)
class Figures:
    """What one attack cost."""

    name: str
    error: str
    longest_block: float  # seconds of loop-thread CPU between two ticks
    longest_lag: float  # seconds a 2 ms tick came late (wall clock)
    healthy_fetches: int
    healthy_failures: int
    slowest_healthy: float  # seconds
    peak_growth: int = 0  # bytes


async def run_attack(
    attack: Attack, *, trace_memory: bool = False, budget: float = BUDGET
) -> Figures:
    """Run one attack against a victim tenant while a healthy tenant keeps fetching."""
    async with IdentityProvider() as idp, hostile_server(attack.answer, gated=True) as hostile:
        idp.add_client("good", SECRET)
        healthy = ClientCredentials(
            token_url=idp.token_url, client_id="good", auth=ClientSecretBasic(SECRET)
        )
        victim = _victim_credentials(attack, hostile.url)

        async def resolver(tenant: str) -> ClientCredentials | None:
            if tenant == "victim":
                hostile.arrived.set()
                await anyio.sleep_forever()
            return healthy

        retry = RetryPolicy(total_timeout=budget, attempts=1)
        async with (
            _stalled_redis(attack) as store,
            TokenManager(resolver=resolver, retry=retry, store=store) as tokens,
        ):
            if attack.redis_stall or attack.api_calls:  # the victim's IdP is a good one
                idp.add_client("victim", SECRET)
                victim = dataclasses.replace(healthy, client_id="victim")
            if not attack.hanging_resolver:
                tokens.register("victim", victim)
            return await _measure(attack, tokens, hostile, trace_memory=trace_memory)


@asynccontextmanager
async def _stalled_redis(attack: Attack) -> AsyncIterator[Any]:
    """For the Redis stall: a store on a redis-server of its own, stopped once the store
    has connected (SIGSTOP: connections open, nothing answers); else no store."""
    if not attack.redis_stall:
        yield None
        return
    from tokenflight.redis import RedisTokenStore

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(10):
            while not await _answers_ping(port):
                await anyio.sleep(0.05)
        store = RedisTokenStore(f"redis://127.0.0.1:{port}/0", prefix="hostile:")
        await store.fetch("warm-up", _warm_up_token, min_ttl=0, current=None)  # connected
        assert store.stats().fallbacks == 0
        server.send_signal(signal.SIGSTOP)
        yield store
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


async def _answers_ping(port: int) -> bool:
    try:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"PING\r\n")
            return (await stream.receive()).startswith(b"+PONG")
    except OSError:
        return False


async def _warm_up_token() -> Token:
    now = anyio.current_time()
    return Token(access_token="warm-up", expires_in=60, obtained_at=now, expires_at=now + 60)


def _victim_credentials(attack: Attack, url: str) -> ClientCredentials:
    if attack.discovered:
        return ClientCredentials(
            issuer=url, client_id="acme", auth=ClientSecret(SECRET), allow_insecure_http=True
        )
    return ClientCredentials(
        token_url=url + "/oauth/token",
        client_id="acme",
        auth=ClientSecretPost(SECRET),
    )


async def _measure(
    attack: Attack, tokens: TokenManager, hostile: Hostile, *, trace_memory: bool
) -> Figures:
    error = "none"
    longest = lag = 0.0
    latencies: list[float] = []
    failures = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal longest, lag
        last, last_wall = time.thread_time(), time.perf_counter()
        while True:
            await anyio.sleep(0.002)
            now, now_wall = time.thread_time(), time.perf_counter()
            longest = max(longest, now - last)
            lag = max(lag, now_wall - last_wall - 0.002)
            last, last_wall = now, now_wall

    async def healthy() -> None:
        nonlocal failures
        n = 0
        while not done.is_set():
            n += 1
            tenant = f"healthy-{n % 8}"  # a few tenants, so the heap (and GC) stays flat
            tokens.invalidate(tenant)  # each call a real token request
            started = time.perf_counter()
            try:
                await tokens.get_token(tenant)
            except TokenError:
                failures += 1
            latencies.append(time.perf_counter() - started)
            if len(latencies) >= 3:
                hostile.release.set()  # the attack was in flight during three fetches

    async def victim() -> None:
        nonlocal error
        try:
            if attack.api_calls:
                error = await _call_api(attack.api_calls, tokens, hostile)
            else:
                if attack.redis_stall:
                    hostile.arrived.set()  # Redis is stopped: the attack is on
                await tokens.get_token("victim")
            if attack.redis_stall or attack.api_calls:
                await hostile.release.wait()  # go on while healthy tenants fetch
        except TokenError as exc:
            error = type(exc).__name__
        finally:
            hostile.release.set()
            done.set()

    growth = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        if trace_memory:
            tracemalloc.start()
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
        try:
            tg.start_soon(victim)
            with anyio.fail_after(60):
                await hostile.arrived.wait()
                await healthy()
                await done.wait()
        finally:
            if trace_memory:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                growth = peak - before
        tg.cancel_scope.cancel()
    return Figures(
        attack.name,
        error,
        longest,
        lag,
        len(latencies),
        failures,
        max(latencies, default=0.0),
        growth,
    )


async def _call_api(calls: int, tokens: TokenManager, hostile: Hostile) -> str:
    """Call the victim's API `calls` times through `TokenAuth`, never reading a body;
    what the victim saw: the statuses and the token requests its 401s caused."""
    statuses: set[int] = set()
    async with tokens.client("victim", base_url=hostile.url) as http:
        for _ in range(calls):
            response = await http.send(http.build_request("GET", "/thing"), stream=True)
            statuses.add(response.status_code)
            await response.aclose()
    keys = tokens.stats().keys
    fetches = sum(k.fetches + k.refreshes for key, k in keys.items() if key.tenant == "victim")
    return f"HTTP {'/'.join(map(str, sorted(statuses)))}, {fetches} token requests"


async def figures(attack: Attack, *, budget: float = BUDGET) -> Figures:
    """Timing from a plain run, memory from a second run under tracemalloc (which slows
    everything it traces, and makes the garbage collector's passes long)."""
    # The objects alive before the attack (a whole test session's, in the suite) are moved
    # out of the collector's way: a pass over them is not the attack's, and took over
    # 100 ms of the loop under load. What the attack allocates is still collected.
    gc.collect()
    gc.freeze()
    try:
        timed = await run_attack(attack, budget=budget)
    finally:
        gc.unfreeze()
    traced = await run_attack(attack, trace_memory=True, budget=budget)
    return Figures(**{**timed.__dict__, "peak_growth": traced.peak_growth})


def table(rows: list[Figures]) -> str:
    """A Markdown table of the figures."""
    lines = [
        "| attack | typed error | peak memory added | longest loop block (CPU) | longest "
        "tick lag (wall) | healthy fetches (failed) | slowest healthy fetch |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.name} | `{row.error}` | {row.peak_growth / 2**20:.2f} MB | "
        f"{row.longest_block * 1000:.1f} ms | {row.longest_lag * 1000:.1f} ms | "
        f"{row.healthy_fetches} ({row.healthy_failures}) | {row.slowest_healthy * 1000:.1f} ms |"
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--scale", type=int, default=1024, help="MB a bomb inflates to")
    args = parser.parse_args(argv)

    async def run_all() -> list[Figures]:
        chosen = attacks(args.scale) + [
            attack
            for attack in store_and_api_attacks(args.scale)
            if not (attack.redis_stall and args.backend != "asyncio")  # redis-py: asyncio
        ]
        return [await figures(attack) for attack in chosen]

    rows = anyio.run(run_all, backend=args.backend)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
