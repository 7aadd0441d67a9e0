"""Fleet benchmark: P processes x T tenants, memory store against RedisTokenStore.

Reports, as Markdown tables:

- IdP token requests per refresh round for the whole fleet (ideal: T, not P x T);
- the latency a caller sees on a local miss: a Redis hit against an IdP fetch;
- get_token calls per second per process (the fast path never touches Redis).

Needs Redis (default redis://127.0.0.1:6379/0) and the `redis` extra. Usage:

    .venv/bin/python benchmarks/fleet.py [--processes 4] [--tenants 50] [--lifetime 4]

Bounded: each fleet run lasts `--duration` seconds (default: the token lifetime plus a
bit, so that two refresh rounds happen), the whole run well under a minute.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from tokenflight import ClientCredentials, ClientSecretBasic, RefreshPolicy, TokenManager
from tokenflight.redis import RedisTokenStore
from tokenflight.testing import IdentityProvider


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--lifetime", type=float, default=4.0, help="token lifetime (s)")
    parser.add_argument("--duration", type=float, default=None, help="fleet run (s)")
    parser.add_argument("--idp-latency", type=float, default=0.05, help="IdP delay (s)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--samples", type=int, default=50, help="local-miss samples")
    # Internal: run as one worker of the fleet.
    parser.add_argument("--worker", choices=["memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--token-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--clients", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def credentials(token_url: str, client_id: str) -> ClientCredentials:
    return ClientCredentials(
        token_url=token_url, client_id=client_id, auth=ClientSecretBasic("s3cret")
    )


REFRESH = RefreshPolicy(fraction=0.5, jitter=0.1)


# -- one worker process ----------------------------------------------------------------


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    store = None
    if args.worker == "redis":
        store = RedisTokenStore(args.redis_url, prefix=args.prefix)
    seen: dict[str, set[str]] = {}
    calls = 0
    async with TokenManager(store=store, refresh=REFRESH) as tokens:
        tenants = [f"t{i}" for i in range(args.tenants)]
        for i, tenant in enumerate(tenants):
            tokens.register(tenant, credentials(args.token_url, f"{args.clients}{i}"))
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        start = anyio.current_time()
        deadline = start + args.duration

        async def first(tenant: str) -> None:
            token = await tokens.get_token(tenant)
            seen.setdefault(tenant, set()).add(token.access_token[:16])

        async with anyio.create_task_group() as tg:  # the cold start: all tenants at once
            for tenant in tenants:
                tg.start_soon(first, tenant)
        warm = anyio.current_time()
        while anyio.current_time() < deadline:
            for tenant in tenants:  # a batch, then let the refresh task run
                token = await tokens.get_token(tenant)
                seen.setdefault(tenant, set()).add(token.access_token[:16])
            calls += len(tenants)
            await anyio.sleep(0)
        elapsed = anyio.current_time() - warm
    return {
        "calls_per_s": calls / elapsed,
        "cold_s": warm - start,
        "tokens": {tenant: len(s) for tenant, s in seen.items()},
    }


# -- the fleet -------------------------------------------------------------------------


async def run_fleet(args: argparse.Namespace, mode: str) -> dict[str, float]:
    prefix = f"tfbench:{secrets.token_hex(4)}:"
    clients = f"{mode}-"
    async with IdentityProvider(token_lifetime=args.lifetime, latency=args.idp_latency) as idp:
        for i in range(args.tenants):
            idp.add_client(f"{clients}{i}", "s3cret")
        command = [sys.executable, __file__, "--worker", mode, "--token-url", idp.token_url]
        command += ["--prefix", prefix, "--clients", clients, "--redis-url", args.redis_url]
        command += ["--tenants", str(args.tenants), "--duration", str(args.duration)]
        processes = [
            await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(args.processes)
        ]
        try:
            streams = [BufferedByteReceiveStream(p.stdout) for p in processes]  # type: ignore[arg-type]
            with anyio.fail_after(30):
                for stream in streams:
                    await stream.receive_until(b"\n", 1000)
                for process in processes:
                    await process.stdin.send(b"go\n")  # type: ignore[union-attr]
            with anyio.fail_after(args.duration + 30):
                results = [json.loads(await s.receive_until(b"\n", 1 << 20)) for s in streams]
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()
        requests = idp.token_requests
    # A tenant went through as many rounds as the most tokens any process saw for it.
    rounds = statistics.mean(
        max(r["tokens"].get(f"t{i}", 0) for r in results) for i in range(args.tenants)
    )
    if mode == "redis":
        await delete_prefix(args.redis_url, prefix)
    return {
        "requests": requests,
        "rounds": rounds,
        "per_round": requests / rounds,
        "calls_per_s": statistics.mean(r["calls_per_s"] for r in results),
        "cold_s": max(r["cold_s"] for r in results),
    }


async def delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio

    async with redis.asyncio.Redis.from_url(url) as client:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)


# -- local-miss latency (in this process) ----------------------------------------------


async def miss_latencies(args: argparse.Namespace) -> dict[str, list[float]]:
    prefix = f"tfbench:{secrets.token_hex(4)}:"
    n = args.samples
    out: dict[str, list[float]] = {}
    async with IdentityProvider(token_lifetime=300, latency=args.idp_latency) as idp:
        for i in range(n):
            idp.add_client(f"lat-{i}", "s3cret")

        async def timed(store: RedisTokenStore | None, label: str) -> None:
            times = []
            async with TokenManager(store=store) as tokens:
                for i in range(n):
                    tokens.register(f"t{i}", credentials(idp.token_url, f"lat-{i}"))
                for i in range(n):
                    started = time.perf_counter()
                    await tokens.get_token(f"t{i}")
                    times.append(time.perf_counter() - started)
                started = time.perf_counter()
                for _ in range(100):
                    for i in range(n):
                        await tokens.get_token(f"t{i}")
                out["hit"] = [(time.perf_counter() - started) / (100 * n)]
            out[label] = times

        await timed(None, "IdP fetch (memory store)")
        await timed(RedisTokenStore(args.redis_url, prefix=prefix), "IdP fetch via Redis lock")
        # A second "process" (a fresh manager and store) finds every token in Redis.
        await timed(RedisTokenStore(args.redis_url, prefix=prefix), "Redis hit")
    await delete_prefix(args.redis_url, prefix)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


async def main(args: argparse.Namespace) -> None:
    if args.duration is None:
        args.duration = args.lifetime * 1.1
    fleets = {mode: await run_fleet(args, mode) for mode in ("memory", "redis")}
    latencies = await miss_latencies(args)
    p, t = args.processes, args.tenants
    print(
        f"\n### Fleet: {p} processes x {t} tenants, token lifetime {args.lifetime:g} s, "
        f"refresh at 40-50%, IdP latency {args.idp_latency * 1000:g} ms, "
        f"{args.duration:g} s run\n"
    )
    print(
        f"| store | IdP requests | rounds | IdP requests per round (ideal {t}) "
        "| cold start, s | calls/s per process |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in fleets.items():
        print(
            f"| {mode} | {r['requests']} | {r['rounds']:.2f} | {r['per_round']:.1f} "
            f"| {r['cold_s']:.2f} | {r['calls_per_s']:,.0f} |"
        )
    print(f"\n### Latency of a local miss ({args.samples} tenants, one at a time)\n")
    print("| path | median ms | p95 ms |")
    print("|---|---:|---:|")
    for label in ("Redis hit", "IdP fetch (memory store)", "IdP fetch via Redis lock"):
        values = sorted(latencies[label])
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"| {label} | {ms(statistics.median(values))} | {ms(p95)} |")
    print(f"| cached hit (fast path, for scale) | {ms(latencies['hit'][0])} | |")
    print(
        "\nCalls/s is the warm loop (cold start excluded): the fast path never touches Redis, "
        "so both stores should match within noise."
    )


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.worker:
        print(json.dumps(anyio.run(worker, arguments, backend="asyncio")), flush=True)
    else:
        anyio.run(main, arguments, backend="asyncio")
