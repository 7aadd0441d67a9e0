"""B3: expiry under load. Workers call the protected resource while short tokens expire.

Each contender runs twice: gated (at most RESOURCE_SLOTS resource requests in flight, the
benchmark's own bound) and ungated (no bound from the benchmark: only what the library does).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from typing import Any

import anyio

from contenders import Contender
from scenarios import RESOURCE_SLOTS, Env, describe, open_contender, tenant_ids

MAX_CALLS_PER_WORKER = 1_000_000
SAMPLES = 4000  # latencies kept for the plot


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(
    env: Env,
    cls: type[Contender],
    rnd: int,
    lifetime: float,
    duration: float,
    cfg: dict[str, Any],
    *,
    gated: bool = True,
) -> dict[str, Any]:
    label = ("short" if lifetime < 60 else "long") + ("" if gated else "-ungated")
    tenants = tenant_ids(f"b3{label}", rnd, cls.name, cfg["b3_tenants"])
    contender = await open_contender(env, cls, tenants, lifetime=lifetime)
    slots: Any = anyio.Semaphore(RESOURCE_SLOTS) if gated else contextlib.nullcontext()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    t0 = await env.admin.reset()
    started = time.perf_counter()
    deadline = started + duration

    async def worker(tenant: str) -> None:
        for _ in range(MAX_CALLS_PER_WORKER):
            begun = time.perf_counter()
            if begun >= deadline:
                return
            try:
                async with slots:
                    response = await contender.call(tenant, env.resource_url)
                statuses[str(response.status_code)] += 1
            except Exception as exc:
                statuses[describe(exc)] += 1
            latencies.append(time.perf_counter() - begun)

    with anyio.move_on_after(duration + cfg["limit"]) as scope:
        async with anyio.create_task_group() as tg:
            for i in range(cfg["b3_workers"]):
                tg.start_soon(worker, tenants[i % len(tenants)])
    wall = time.perf_counter() - started
    stats = await env.admin.stats(records=True)
    await contender.aclose()
    step = max(1, len(latencies) // SAMPLES)
    return {
        "gated": gated,
        "lifetime": lifetime,
        "duration": wall,
        "tenants": len(tenants),
        "calls": len(latencies),
        "token_requests": stats["token_requests"],
        "ideal": len(tenants) * math.ceil(wall / lifetime),  # calls in flight run over
        "caller_401": statuses.get("401", 0),
        "idp_401": stats["resource_rejections"],
        "errors": sum(n for k, n in statuses.items() if not k.isdigit()),
        "statuses": dict(statuses),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "token_times": [t - t0 for t, _ in stats.get("records", [])],
        "latency_sample": sorted(latencies)[::step],
        "timed_out": scope.cancelled_caught,
    }


async def b3(env: Env, cls: type[Contender], rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """The same load with 2-second tokens, then with 3600-second tokens; gated, then not."""
    out: dict[str, Any] = {}
    for gated, prefix in ((True, ""), (False, "ungated_")):
        for run, lifetime, duration in (
            ("short", cfg["b3_lifetime"], cfg["b3_duration"]),
            ("long", 3600.0, cfg["b3_long_duration"]),
        ):
            out[prefix + run] = await _run(env, cls, rnd, lifetime, duration, cfg, gated=gated)
    return out
