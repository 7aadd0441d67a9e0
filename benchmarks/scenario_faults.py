"""B6: faults at the token endpoint on the first call. B7: a wrong client secret."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio

from contenders import Contender
from scenarios import Env, describe, open_contender, tenant_ids

FAULTS: dict[str, tuple[dict[str, Any], int]] = {
    "503 x3": ({"status": 503}, 3),
    "dropped connection": ({"drop": True}, 1),
    "429 Retry-After: 1": ({"status": 429, "headers": {"Retry-After": "1"}}, 1),
}


async def b6(env: Env, cls: type[Contender], rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """For each fault: does the first call get a token, with how many requests, how fast."""
    out: dict[str, Any] = {}
    for i, (label, (fault, count)) in enumerate(FAULTS.items()):
        (tenant,) = tenant_ids(f"b6f{i}", rnd, cls.name, 1)
        contender = await open_contender(env, cls, [tenant])
        await env.admin.reset()
        await env.admin.fault(count, **fault)
        outcome = "timed out"
        started = time.perf_counter()
        with anyio.move_on_after(cfg["limit"]):
            try:
                await contender.get_token(tenant)
                outcome = "token"
            except Exception as exc:
                outcome = describe(exc)
        elapsed = time.perf_counter() - started
        stats = await env.admin.stats()
        await contender.aclose()
        out[label] = {
            "got_token": outcome == "token",
            "outcome": outcome,
            "token_requests": stats["token_requests"],
            "time_ms": elapsed * 1000,
        }
    await env.admin.reset()
    return out


async def b7(env: Env, cls: type[Contender], rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Two waves of concurrent callers with a wrong secret: IdP requests, what callers see."""
    (tenant,) = tenant_ids("b7", rnd, cls.name, 1)
    await env.admin.add_clients([tenant])
    contender = cls(env.token_url, "wrong-secret")
    await contender.start()
    contender.add_tenant(tenant)
    out: dict[str, Any] = {}
    for wave in ("wave1", "wave2"):
        seen: Counter[str] = Counter()

        await env.admin.reset()
        started = time.perf_counter()
        deadline = started + cfg["b7_limit"]

        async def caller(seen: Counter[str] = seen, deadline: float = deadline) -> None:
            if time.perf_counter() > deadline:  # blocking peers never yield to the timeout
                return
            try:
                await contender.get_token(tenant)
                seen["token"] += 1
            except Exception as exc:
                seen[describe(exc)] += 1

        with anyio.move_on_after(cfg["b7_limit"]):
            async with anyio.create_task_group() as tg:
                for _ in range(cfg["b7_callers"]):
                    tg.start_soon(caller)
        elapsed = time.perf_counter() - started
        stats = await env.admin.stats()
        out[wave] = {
            "timed_out": sum(seen.values()) < cfg["b7_callers"],
            "token_requests": stats["token_requests"],
            "seen": dict(seen),
            "time_ms": elapsed * 1000,
        }
    await contender.aclose()
    return out
