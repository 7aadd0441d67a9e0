"""B9: token economy. Tenants with 24-hour tokens, each called now and then over a day.

1,000 tenants (Auth0's 86,400-second tokens), each calling `get_token` at random intervals
between 1 and 60 minutes over a simulated day, on trio's `MockClock` (the day passes in
seconds; token responses from `httpx.MockTransport`). The minimum is one token request per
tenant: every call falls within its first token's lifetime. Default `RefreshPolicy`.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from typing import Any

import anyio
import httpx
import trio
import trio.testing

from tokenflight import ClientCredentials, ClientSecretBasic, RefreshPolicy, TokenManager

QUICK: dict[str, Any] = {"b9_tenants": 1_000, "b9_day": 86_400.0}
FULL: dict[str, Any] = {**QUICK}
LIFETIME = 86_400.0
INTERVAL = (60.0, 3_600.0)


async def _day(tenants: int, day: float, seed: int) -> dict[str, Any]:
    requests = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        body = {"access_token": f"tok-{requests}", "token_type": "Bearer", "expires_in": LIFETIME}
        return httpx.Response(200, content=json.dumps(body).encode())

    rng = random.Random(seed)
    calls = 0
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        TokenManager(http_client=http, refresh=RefreshPolicy()) as tokens,
    ):
        for n in range(tenants):
            tokens.register(
                f"t{n}",
                ClientCredentials(
                    token_url="https://idp.example/token",
                    client_id=f"c{n}",
                    auth=ClientSecretBasic("x"),
                ),
            )
        start = anyio.current_time()

        async def tenant(name: str, pauses: list[float]) -> None:
            nonlocal calls
            for pause in pauses:
                await anyio.sleep(pause)
                await tokens.get_token(name)
                calls += 1

        peak_slots = 0
        async with anyio.create_task_group() as tg:
            for n in range(tenants):
                times, when = [], rng.uniform(*INTERVAL)
                while when < day:  # every call within the day
                    times.append(when)
                    when += rng.uniform(*INTERVAL)
                pauses = [b - a for a, b in zip([0.0, *times], times, strict=False)]
                tg.start_soon(tenant, f"t{n}", pauses)
            while anyio.current_time() < start + day:
                await anyio.sleep(600)
                peak_slots = max(peak_slots, tokens.stats().slots)
        current, peak = tracemalloc.get_traced_memory()
        stats = tokens.stats()
    tracemalloc.stop()
    held = current - baseline
    return {
        "tenants": tenants,
        "calls": calls,
        "token_requests": requests,
        "minimum": tenants,
        "refreshes": stats.total.refreshes,
        "evictions": stats.evictions,
        "slots_end": stats.slots,
        "peak_slots": peak_slots,
        "memory_mib": held / 2**20,
        "peak_memory_mib": (peak - baseline) / 2**20,
        "bytes_per_slot": held / max(1, stats.slots),
    }


def simulate(tenants: int, day: float, seed: int = 1) -> dict[str, Any]:
    """One simulated day on trio's MockClock; returns its figures."""
    started = time.perf_counter()
    clock = trio.testing.MockClock(autojump_threshold=0)
    result: dict[str, Any] = trio.run(_day, tenants, day, seed, clock=clock)
    result["wall_s"] = time.perf_counter() - started
    return result


async def run(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Run the day in a child process (its own trio loop) and record one row.

    A process, not a thread: Ctrl-C terminates it at once, where the runner would wait
    for a thread to finish the simulated day.
    """
    import children  # the runner's (benchmarks/ on sys.path); simulate() alone needs none
    import display

    spec = {"kind": "b9", "tenants": cfg["b9_tenants"], "day": cfg["b9_day"]}
    result = await anyio.to_thread.run_sync(children.spawn, spec, 600)
    display.step(f"  B9 {cfg['b9_tenants']} tenants: {result.get('wall_s', 0.0):.1f} s")
    rows.append({"scenario": "B9", "round": 1, "contender": "tokenflight", **result})


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "tenants",
        "calls",
        "IdP requests",
        "minimum",
        "refreshes",
        "evictions",
        "slots at the end",
        "MiB held (tracemalloc)",
        "bytes per slot",
        "peak MiB",
    ]
    lines = [
        [
            f"{r['tenants']:,}",
            f"{r['calls']:,}",
            f"{r['token_requests']:,}",
            f"{r['minimum']:,}",
            str(r["refreshes"]),
            str(r["evictions"]),
            f"{r['slots_end']:,}",
            f"{r['memory_mib']:.1f}",
            f"{r['bytes_per_slot']:,.0f}",
            f"{r['peak_memory_mib']:.1f}",
        ]
        for r in rows
        if r["scenario"] == "B9" and "calls" in r
    ]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    got = [r for r in rows if r["scenario"] == "B9" and "calls" in r]
    return [
        (
            "B9 IdP requests = tenants (24-hour tokens, calls 1-60 min apart for a day)",
            r["token_requests"] == r["minimum"],
            f"{r['token_requests']:,} for {r['tenants']:,} tenants, {r['memory_mib']:.1f} MiB held",
        )
        for r in got
    ]


if __name__ == "__main__":
    print(json.dumps(simulate(QUICK["b9_tenants"], QUICK["b9_day"]), indent=1))
