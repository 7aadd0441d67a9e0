"""B4 (many tenants, per contender), B5 (scale) and B9 (a simulated day) in fresh child
processes.

The runner calls `spawn(spec)`, which starts `python benchmarks/children.py SPEC_JSON`: one
measurement, one JSON line, then exit, so that peak RSS belongs to that measurement alone
and Ctrl-C ends it at once.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

HERE = Path(__file__).resolve().parent


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def _b4_child(spec: dict[str, Any]) -> dict[str, Any]:
    from contenders import CONTENDERS, STACK_VARIANTS
    from idp_process import SECRET

    base = _rss()
    deadline = time.perf_counter() + spec["limit"]
    contender = {**CONTENDERS, **STACK_VARIANTS}[spec["contender"]](spec["token_url"], SECRET)
    await contender.start()
    tenants: list[str] = []
    for i in range(spec["tenants"]):
        if i % 256 == 0 and time.perf_counter() > deadline:
            break
        tenants.append(f"{spec['prefix']}-{i}")
        contender.add_tenant(tenants[-1])
    tokens: set[str] = set()
    seen: Counter[str] = Counter()

    async def caller(tenant: str) -> None:
        if time.perf_counter() > deadline:
            seen["not started (time limit)"] += 1
            return
        try:
            tokens.add(await contender.get_token(tenant))
            seen["token"] += 1
        except Exception as exc:
            seen[type(exc).__name__] += 1

    # The callers are asyncio tasks, as an asyncio server's requests are: an anyio task
    # group's start_soon costs about 4x a task's own creation (about 2 s of CPU for
    # 40,000 callers here), which no contender's users would pay for their requests.
    started = time.perf_counter()
    timed_out = False
    try:
        async with asyncio.timeout(max(0.0, deadline - started)), asyncio.TaskGroup() as tg:
            for _, tenant in itertools.product(range(spec["callers"]), tenants):
                tg.create_task(caller(tenant))
    except TimeoutError:
        timed_out = True
    wall = time.perf_counter() - started
    # No aclose(): closing thousands of pools takes longer than the run; the process exits.
    return {
        "tenants_set_up": len(tenants),
        "wall_s": wall,
        "served": seen["token"],
        "seen": dict(seen),
        "distinct_tokens": len(tokens),
        "timed_out": timed_out
        or len(tenants) < spec["tenants"]
        or seen["not started (time limit)"] > 0,
        "base_rss": base,
        "peak_rss": _peak_rss(),
    }


def _token_handler() -> Any:
    counter = itertools.count()

    def handler(request: httpx.Request) -> httpx.Response:
        token = f"tok-{next(counter)}-{'x' * 40}"
        return httpx.Response(
            200, json={"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        )

    return handler


async def _b5_child(spec: dict[str, Any]) -> dict[str, Any]:
    from tokenflight import ClientCredentials, ClientSecretBasic, TokenManager

    url = "http://127.0.0.1:9/oauth/token"  # never contacted: MockTransport answers
    http = httpx.AsyncClient(transport=httpx.MockTransport(_token_handler()))
    deadline = time.perf_counter() + spec["limit"]
    points: list[dict[str, Any]] = []
    async with TokenManager(http_client=http, max_concurrent_fetches=64) as tokens:
        tokens.register(
            "warm", ClientCredentials(token_url=url, client_id="w", auth=ClientSecretBasic("s"))
        )
        await tokens.get_token("warm")
        gc.collect()
        base = _rss()
        done = 0
        for target in spec["checkpoints"]:
            while done < target and time.perf_counter() < deadline:
                batch = [f"t{i}" for i in range(done, min(target, done + 2000))]
                for name in batch:
                    creds = ClientCredentials(
                        token_url=url, client_id=name, auth=ClientSecretBasic("s")
                    )
                    tokens.register(name, creds)
                await asyncio.gather(*(tokens.get_token(name) for name in batch))
                done += len(batch)
            gc.collect()
            rss = _rss()
            points.append(
                {
                    "tenants": done,
                    "rss": rss,
                    "bytes_per_slot": (rss - base) / done if done else 0.0,
                    "tasks": len(asyncio.all_tasks()) - 1,  # minus this one
                }
            )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await anyio.sleep(spec["idle"])
        idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        idle_tasks = len(asyncio.all_tasks()) - 1
        calls = 0
        stop = time.perf_counter() + spec["active_seconds"]

        async def active(name: str) -> None:
            nonlocal calls
            while time.perf_counter() < stop:
                for _ in range(100):
                    await tokens.get_token(name)
                calls += 100
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for i in range(spec["active"]):
                tg.start_soon(active, f"t{i % max(done, 1)}")
            active_tasks = len(asyncio.all_tasks()) - 1 - spec["active"]
        fetches = tokens.stats().total.fetches
    return {
        "points": points,
        "base_rss": base,
        "idle_cpu_ms_per_s": idle_cpu * 1000,
        "idle_tasks": idle_tasks,
        "active_tasks": active_tasks,
        "active_calls_per_s": calls / spec["active_seconds"],
        "fetches": fetches,
        "peak_rss": _peak_rss(),
    }


def spawn(spec: dict[str, Any], hard_limit: float) -> dict[str, Any]:
    """Run one child measurement; a child that overruns is killed and reported as such."""
    import processes  # the parent's: the child itself needs none of it

    argv = [sys.executable, str(HERE / "children.py"), json.dumps(spec)]
    try:
        done = processes.run_captured(argv, hard_limit)
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {hard_limit:.0f} s", "timed_out": True}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:200]}", "timed_out": False}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    sys.path.insert(0, str(HERE))
    spec = json.loads(sys.argv[1])
    from idp_process import raise_fd_limit

    raise_fd_limit()
    if spec["kind"] == "b9":
        import scenario_economy

        print(json.dumps(scenario_economy.simulate(spec["tenants"], spec["day"])), flush=True)
        return
    child = _b4_child if spec["kind"] == "b4" else _b5_child
    if spec["kind"] == "b4":
        result = asyncio.new_event_loop().run_until_complete(child(spec))
        print(json.dumps(result), flush=True)
        os._exit(0)  # skip closing each contender's pools and connections: the OS does it
    print(json.dumps(asyncio.run(child(spec))), flush=True)


if __name__ == "__main__":
    main()
