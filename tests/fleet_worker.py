"""One process of a test fleet: a TokenManager with a RedisTokenStore, driven over stdio.

Prints ``ready`` once its tenants are registered, waits for a line on stdin (so that the
test starts every worker at once), asks for every tenant's token at once and prints
``warm``, then keeps asking for each tenant's token until it has seen ``--rounds``
distinct ones (or ``--duration`` seconds have passed since ``warm``), and prints one JSON line of
statistics. Errors are counted, not
raised, so the test sees them. Run by tests/test_redis_store.py; not a test itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import anyio
import anyio.to_thread

from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    RefreshPolicy,
    TokenError,
    TokenManager,
)
from tokenflight.redis import RedisTokenStore


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--client-prefix", default="client-")
    parser.add_argument("--secret", default="s3cret")
    parser.add_argument("--duration", type=float, default=0.0, help="at most (s) after warm")
    parser.add_argument("--rounds", type=int, default=1, help="tokens to see per tenant")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--lock-ttl", type=float, default=35.0)
    parser.add_argument("--timeout", type=float, default=0.5, help="Redis timeouts (s)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, object]:
    store = RedisTokenStore(
        args.redis_url,
        prefix=args.prefix,
        lock_ttl=args.lock_ttl,
        timeout=args.timeout,
        connect_timeout=args.timeout,
    )
    refresh = RefreshPolicy(fraction=args.fraction, jitter=args.jitter)
    errors: list[str] = []
    tokens_seen: dict[str, set[str]] = {}
    async with TokenManager(store=store, refresh=refresh) as manager:
        tenants = [f"t{i}" for i in range(args.tenants)]
        for i, tenant in enumerate(tenants):
            creds = ClientCredentials(
                token_url=args.token_url,
                client_id=f"{args.client_prefix}{i}",
                auth=ClientSecretBasic(args.secret),
            )
            manager.register(tenant, creds)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        start = anyio.current_time()

        async def call(tenant: str, rounds: int) -> None:
            # Ask until this tenant has shown `rounds` distinct tokens, or time is up.
            while True:
                try:
                    token = await manager.get_token(tenant)
                except TokenError as exc:
                    errors.append(type(exc).__name__)
                else:
                    # Kept only in memory, to count distinct tokens; never printed.
                    tokens_seen.setdefault(tenant, set()).add(token.access_token)
                if len(tokens_seen.get(tenant, ())) >= rounds:
                    return
                if anyio.current_time() - start >= args.duration:
                    return
                await anyio.sleep(args.interval)

        async with anyio.create_task_group() as tg:  # the cold start, all tenants at once
            for tenant in tenants:
                tg.start_soon(call, tenant, 1)
        print("warm", flush=True)
        start = anyio.current_time()  # the time limit counts from here
        async with anyio.create_task_group() as tg:  # until the refresh round has landed
            for tenant in tenants:
                tg.start_soon(call, tenant, args.rounds)
        total = manager.stats().total
    return {
        "manager": dataclasses.asdict(total),
        "store": dataclasses.asdict(store.stats()),
        "errors": errors,
        "distinct_tokens": sum(len(s) for s in tokens_seen.values()),
    }


def main(argv: list[str]) -> None:
    result = anyio.run(run, parse_args(argv), backend="asyncio")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
