"""Run the tokenflight benchmarks against the libraries users would otherwise pick.

    .venv/bin/python benchmarks/run.py [--quick | --full] [--only B1,B3] [--rounds N]
    .venv/bin/python benchmarks/run.py --only B8 --quick     # authorized calls at scale only
    tokenflight bench -- --quick

The bundled identity provider runs in its own process (pinned to another core where the
OS allows), with 20 ms of latency on every token response. Contenders run interleaved,
round by round, so machine noise hits them alike. Writes benchmarks/results/report.md,
results.json and PNG plots; with --update-results (a quick run of every scenario) it also
copies the report over the tracked benchmarks/RESULTS.md.

Progress (display.py): live on a terminal with rich, plain lines otherwise; a summary
table at the end. Ctrl-C terminates the children, prints the summary of the scenarios
finished and exits 130 without writing a report.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import children  # noqa: E402
import display  # noqa: E402
import processes  # noqa: E402
import report  # noqa: E402
import scenario_calls  # noqa: E402
import scenario_economy  # noqa: E402
import scenario_fairness  # noqa: E402
from contenders import CONTENDERS, STACK_VARIANTS  # noqa: E402
from idp_process import Admin, IdPProcess  # noqa: E402
from scenario_expiry import b3  # noqa: E402
from scenario_faults import b6, b7  # noqa: E402
from scenarios import B2_VARIANTS, Env, b1, b2, tenant_ids  # noqa: E402

QUICK: dict[str, Any] = {
    "mode": "quick",
    "rounds": 1,
    "limit": 10.0,
    "b1_callers": 1000,
    "b2_gets": 20_000,
    "b2_requests": 1_000,
    "b2_limit": 2.0,
    "b3_lifetime": 2.0,
    "b3_duration": 2.2,
    "b3_long_duration": 0.5,
    "b3_workers": 200,
    "b3_tenants": 10,
    "b4_phases": [(100, 20)],
    "b4_limit": 2.0,
    "b5_tenants": 3_000,
    "b5_idle": 0.5,
    "b7_callers": 100,
    "b7_limit": 0.8,
    **scenario_calls.QUICK,
    **scenario_economy.QUICK,
    **scenario_fairness.QUICK,
}
FULL: dict[str, Any] = {
    **QUICK,
    "mode": "full",
    "rounds": 3,
    "b2_requests": 5_000,
    "b2_limit": 10.0,
    "b3_duration": 10.0,
    "b3_long_duration": 5.0,
    "b3_rounds": 2,
    "b4_phases": [(2000, 20), (20_000, 2)],
    "b4_limit": 20.0,
    # From this many tenants only tokenflight runs (on each stack), to completion: the limit
    # is a guard against a hang, not a bound on the workload (peers stall at 2,000).
    "b4_scale_from": 10_000,
    "b4_scale_limit": 600.0,
    "b5_tenants": 100_000,
    "b5_idle": 5.0,
    "b7_limit": 10.0,
    **scenario_calls.FULL,
    **scenario_economy.FULL,
    **scenario_fairness.FULL,
}
IN_PROCESS = {"B1": b1, "B2": b2, "B3": b3, "B6": b6, "B7": b7}
ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "FAIR")


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> dict[str, Any]:
    cores = CORES  # read before the client pins itself to one core
    libs = (
        "tokenflight",
        "httpx",
        "httpcore",
        "httpx2",
        "httpcore2",
        "aiohttp",
        "httpx-aiohttp",
        "anyio",
        "authlib",
        "httpx-auth",
        "h11",
    )
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cores": cores,
        "versions": {lib: version(lib) for lib in libs},
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


async def run_in_process(env: Env, name: str, cfg: dict[str, Any], rows: list[dict[str, Any]]):
    scenario = IN_PROCESS[name]
    rounds = cfg.get(f"{name.lower()}_rounds", cfg["rounds"])
    contenders = [*CONTENDERS.values(), *(B2_VARIANTS.values() if name == "B2" else ())]
    for rnd in range(1, rounds + 1):
        for contender in contenders:
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(scenario(env, contender, rnd, cfg), 600)
            except Exception as exc:  # a broken contender must not sink the whole run
                result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            took = time.perf_counter() - started
            display.step(f"  {name} round {rnd} {contender.name}: {took:.1f} s", rnd)
            rows.append({"scenario": name, "round": rnd, "contender": contender.name, **result})


async def run_b4(env: Env, cfg: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    for tenants, callers in cfg["b4_phases"]:
        scale = tenants >= cfg.get("b4_scale_from", math.inf)
        limit = cfg["b4_scale_limit"] if scale else cfg["b4_limit"]
        names = ["tokenflight", *STACK_VARIANTS] if scale else [*CONTENDERS, *STACK_VARIANTS]
        for name in names:
            prefix = f"b4-{tenants}"
            ids = tenant_ids(prefix, 1, name, tenants)
            await env.admin.add_clients(ids)
            await env.admin.reset()
            spec = {
                "kind": "b4",
                "contender": name,
                "token_url": env.token_url,
                "prefix": ids[0].rsplit("-", 1)[0],
                "tenants": tenants,
                "callers": callers,
                "limit": limit,
            }
            started = time.perf_counter()
            result = await asyncio.to_thread(children.spawn, spec, limit + 60)
            await asyncio.sleep(0.5)  # let the IdP count requests still on the wire
            stats = await env.admin.stats()
            display.step(f"  B4 {tenants}x{callers} {name}: {time.perf_counter() - started:.1f} s")
            rows.append(
                {
                    "scenario": "B4",
                    "round": 1,
                    "contender": name,
                    "tenants": tenants,
                    "callers": callers,
                    "limit": limit,
                    "token_requests": stats["token_requests"],
                    "connections": stats["connections"],
                    **result,
                }
            )


async def run_b5(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    n = cfg["b5_tenants"]
    spec = {
        "kind": "b5",
        "checkpoints": sorted({n // 10, n // 4, n // 2, n}),
        "idle": cfg["b5_idle"],
        "active": 100,
        "active_seconds": 1.0,
        "limit": 300.0,
    }
    started = time.perf_counter()
    result = await asyncio.to_thread(children.spawn, spec, 400)
    display.step(f"  B5 {n} tenants: {time.perf_counter() - started:.1f} s")
    rows.append({"scenario": "B5", "round": 1, "contender": "tokenflight", "tenants": n, **result})


async def main_async(cfg: dict[str, Any], names: list[str], rows: list[dict[str, Any]]) -> None:
    """Run the scenarios ``names`` in order, appending their rows to ``rows`` as they come."""
    idp = IdPProcess(latency=0.02)
    idp.start()
    cfg["idp_pinned"] = idp.pinned
    cfg["idp_argv"] = " ".join(idp.argv[1:])
    admin = Admin(idp.url)
    env = Env(idp.token_url, idp.resource_url, admin)
    try:
        await admin.reset()
        for name in names:
            display.begin(name)
            if name == "B4":
                await run_b4(env, cfg, rows)
            elif name == "B5":
                await run_b5(cfg, rows)
            elif name == "B8":
                await scenario_calls.run(env, cfg, rows)
            elif name == "B9":
                await scenario_economy.run(cfg, rows)
            elif name == "FAIR":
                await scenario_fairness.run(env, cfg, rows)
            else:
                await run_in_process(env, name, cfg, rows)
            display.finish(name, rows)
    finally:
        processes.terminate_all()  # an interrupted run's children (a finished run has none)
        await admin.aclose()
        idp.stop()


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the benchmarks; 0, or 130 when interrupted (after the summary so far)."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="about 3-4 minutes, B8 about 2 (default)"
    )
    mode.add_argument("--full", action="store_true", help="longer windows and more rounds")
    parser.add_argument("--only", default=",".join(ORDER), help="scenarios, e.g. B1,B3")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="copy a quick run of every scenario over the tracked benchmarks/RESULTS.md",
    )
    args = parser.parse_args(argv)
    if args.update_results and (args.full or args.only != parser.get_default("only")):
        parser.error("--update-results takes a quick run of every scenario (no --full, --only)")
    cfg = dict(FULL if args.full else QUICK)
    if args.rounds:
        cfg["rounds"] = cfg["b3_rounds"] = cfg["b8_rounds"] = cfg["fair_rounds"] = args.rounds
    only = {s.strip().upper() for s in args.only.split(",")}
    names = [name for name in ORDER if name in only]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    run = display.Run(cfg, names)
    try:
        with display.showing(run, out):
            asyncio.run(main_async(cfg, names, rows))
    except KeyboardInterrupt:
        processes.terminate_all()  # in case a second Ctrl-C cut the run's own clean-up short
        title = f"Summary (interrupted: {len(run.finished)} of {len(names)} scenarios finished)"
        display.print_summary(out, rows, cfg, run.finished, title)
        return 130
    cfg["elapsed_s"] = time.perf_counter() - started
    info = machine()
    paths = report.write(rows, cfg, info, args.out)
    if args.update_results:
        (HERE / "RESULTS.md").write_text(paths["markdown"].read_text(encoding="utf-8"))
    display.print_summary(out, rows, cfg, names, "Summary")
    written = ", ".join(str(p) for p in paths.values())
    print(f"done in {cfg['elapsed_s']:.0f} s: {written}", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
