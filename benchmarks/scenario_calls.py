# ruff: noqa: RUF001, RUF002  (the multiplication sign and en dash in report text are meant)
"""B8: authorized calls at scale. Its settings, its run, its table and its targets.

One tenant (or a few); W workers each loop `GET /api/resource` for D seconds through one
shared client per contender, with no bound from the benchmark: only what each library does
itself. Every contender runs on the same HTTP stack as the others in its table, and every
(stack, contender, workers, lifetime) case in a fresh child process (`calls_child.py`), so
that the cases do not share pools, caches or garbage, and Authlib can run on httpx.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import display  # noqa: E402
import processes  # noqa: E402
from calls_child import LAG_TICK, SETUP_LIMIT  # noqa: E402
from idp_process import SECRET, Admin  # noqa: E402

__all__ = [
    "CONTENDERS",
    "FULL",
    "LAG_TICK",
    "QUICK",
    "STACKS",
    "figures",
    "run",
    "table",
    "targets",
]

# -- settings ----------------------------------------------------------------------------

STACKS = ("httpx", "httpx2", "aiohttp")
CONTENDERS = ("tokenflight", "tokenflight-auth", "hand-rolled", "authlib")
QUICK: dict[str, Any] = {
    "b8_cases": [[200, 2.0], [200, 3600.0], [1000, 2.0]],  # [workers, token lifetime]
    # Seconds per case: just long enough to reach the first expiry of a 2-second token
    # (36 cases in fresh processes: about two minutes in all).
    "b8_duration": 2.0,
    "b8_tenants": 1,
    "b8_stacks": list(STACKS),
    "b8_rounds": 1,
    "b8_grace": 10.0,  # after the window, for calls in flight to finish (then cancelled)
}
FULL: dict[str, Any] = {
    **QUICK,
    "b8_cases": [[200, 2.0], [200, 3600.0], [1000, 2.0], [1000, 3600.0]],
    "b8_duration": 7.0,
}
KILL_MARGIN = 10.0  # the parent kills a child this long after its own limits
TOKENFLIGHT = "tokenflight"

Row = dict[str, Any]


class Env(Protocol):
    """Where the IdP is (`scenarios.Env` is one)."""

    @property
    def token_url(self) -> str: ...
    @property
    def resource_url(self) -> str: ...
    @property
    def admin(self) -> Admin: ...


# -- run: one child per (stack, contender, workers, lifetime) ----------------------------


def spawn(spec: Row, hard_limit: float) -> Row:
    """Run one case in a child; a child that overruns is killed and reported as such."""
    argv = [sys.executable, str(HERE / "calls_child.py"), json.dumps(spec)]
    try:
        done = processes.run_captured(argv, hard_limit)
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {hard_limit:g} s", "timed_out": True}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:200]}", "timed_out": False}
    result: Row = json.loads(lines[0])
    return result


async def _case(env: Env, cfg: Row, rnd: int, stack: str, name: str, case: list[Any]) -> Row:
    """Fresh client ids at the IdP, zeroed counters, the child, then the IdP's counts."""
    workers, lifetime = case
    tenants = [
        f"b8-{stack}-{name}-w{workers}-l{lifetime:g}-r{rnd}-{i}" for i in range(cfg["b8_tenants"])
    ]
    await env.admin.add_clients(tenants, lifetime=lifetime)
    await env.admin.reset()
    spec = {
        "stack": stack,
        "contender": name,
        "workers": workers,
        "lifetime": lifetime,
        "duration": cfg["b8_duration"],
        "grace": cfg["b8_grace"],
        "tenants": tenants,
        "secret": SECRET,
        "token_url": env.token_url,
        "resource_url": env.resource_url,
    }
    limit = SETUP_LIMIT + cfg["b8_duration"] + cfg["b8_grace"] + KILL_MARGIN
    result = await asyncio.to_thread(spawn, spec, limit)
    if result.get("error") or result.get("timed_out"):
        await asyncio.sleep(0.5)  # cancelled requests may still be on their way to the IdP
    stats = await env.admin.stats()
    return {
        "scenario": "B8",
        "round": rnd,
        "contender": name,
        "stack": stack,
        "workers": workers,
        "lifetime": lifetime,
        "token_requests": stats["token_requests"],
        "idp_401": stats["resource_rejections"],
        "resource_requests": stats["resource_requests"],
        "connections": stats["connections"],
        **result,
    }


async def run(env: Env, cfg: Row, rows: list[Row]) -> None:
    """Every case on every stack, contenders interleaved so machine noise hits them alike."""
    for rnd in range(1, cfg["b8_rounds"] + 1):
        for case in cfg["b8_cases"]:
            for stack in cfg["b8_stacks"]:
                for name in CONTENDERS:
                    started = time.perf_counter()
                    rows.append(await _case(env, cfg, rnd, stack, name, case))
                    took = time.perf_counter() - started
                    display.step(f"  B8 {stack} {case[0]}w {case[1]:g}s {name}: {took:.1f} s", rnd)


# -- figures: aggregated rows in, table and targets out ----------------------------------

STACK_TITLES = {
    "httpx": "httpx 0.28 (`httpx.AsyncClient`, httpcore 1.0)",
    "httpx2": "httpx2 (`httpx2.AsyncClient`, httpcore2)",
    "aiohttp": "aiohttp (`httpx2.AsyncClient` over `httpx_aiohttp.httpx2.AiohttpTransport`)",
}
Key = tuple[str, int, float, str]  # stack, workers, lifetime, contender
MEDIANS = ["calls", "calls_per_s", "p50_ms", "p99_ms", "max_ms", "lag_p99_ms"]
MEDIANS += ["token_requests", "connections", "cpu_us_per_call"]
WORST = ("idp_401", "caller_401", "errors", "lag_max_ms")  # over rounds: the highest


def _problem(row: Row) -> str | None:
    """Why a case has no figures: its error, or a client on another stack than meant."""
    if row.get("error"):
        return str(row["error"])
    if row.get("ran_on") != row["stack"]:
        return f"ran on {row.get('ran_on')}, not {row['stack']}"
    return None


def figures(rows: list[Row]) -> dict[Key, Row]:
    """Per case: medians over rounds of rates and latencies, the worst round's 401s/errors."""
    groups: dict[Key, list[Row]] = defaultdict(list)
    for row in rows:
        if row["scenario"] == "B8":
            key = (row["stack"], row["workers"], row["lifetime"], row["contender"])
            groups[key].append(row)
    out: dict[Key, Row] = {}
    for key, group in groups.items():
        problems = [p for p in map(_problem, group) if p]
        good = [r for r in group if not _problem(r)]
        merged: Row = {"rounds": len(group), "problem": problems[-1] if problems else None}
        if good:
            for field in MEDIANS:
                merged[field] = statistics.median(r[field] for r in good)
            for field in WORST:
                merged[field] = max(r[field] for r in good)
            merged["timed_out"] = any(r["timed_out"] for r in good)
            kinds: Counter[str] = Counter()
            for r in good:
                kinds.update(r["errors_by_type"])
            merged["errors_by_type"] = dict(kinds)
        out[key] = merged
    return out


HEADER = [
    "workers, token",
    "contender",
    "calls",
    "calls/s",
    "× authlib",
    "× hand-rolled",
    "p50 ms",
    "p99 ms",
    "p99 × authlib",
    "max ms",
    "401s IdP / callers",
    "errors",
    "loop lag p99 / max ms",
    "token requests",
    "IdP connections",
    "CPU µs per call",
]


def _line(case: str, name: str, f: Row, authlib: Row, hand: Row) -> list[str]:
    from report import num, ratio

    if "calls_per_s" not in f:
        return [case, name, *["–"] * 9, f"error: {f['problem']}", *["–"] * 4]
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(f["errors_by_type"].items()))
    errors = f"{num(f['errors'])} ({kinds})" if kinds else "0"
    return [
        case,
        name,
        num(f["calls"]),
        num(f["calls_per_s"], 0),
        ratio(f["calls_per_s"], authlib.get("calls_per_s")),
        ratio(f["calls_per_s"], hand.get("calls_per_s")),
        num(f["p50_ms"], 1),
        num(f["p99_ms"], 1),
        ratio(f["p99_ms"], authlib.get("p99_ms")),
        num(f["max_ms"], 0),
        f"{num(f['idp_401'])} / {num(f['caller_401'])}",
        errors + (" (timed out)" if f["timed_out"] else ""),
        f"{num(f['lag_p99_ms'], 1)} / {num(f['lag_max_ms'], 0)}",
        num(f["token_requests"]),
        num(f["connections"]),
        num(f["cpu_us_per_call"], 0),
    ]


def table(rows: list[Row]) -> str:
    """One Markdown table per stack, with ratios to Authlib and to hand-rolled on it."""
    from report import table as markdown_table

    figs = figures(rows)
    parts = []
    for stack in [s for s in STACKS if any(k[0] == s for k in figs)]:
        lines = []
        for workers, lifetime in sorted({(k[1], k[2]) for k in figs}):
            authlib = figs.get((stack, workers, lifetime, "authlib"), {})
            hand = figs.get((stack, workers, lifetime, "hand-rolled"), {})
            for name in CONTENDERS:
                f = figs.get((stack, workers, lifetime, name))
                if f is not None:
                    case = f"{workers:,}, {lifetime:g} s"
                    lines.append(_line(case, name, f, authlib, hand))
        parts.append(f"### {STACK_TITLES[stack]}\n\n" + markdown_table(HEADER, lines))
    return "\n\n".join(parts)


Target = tuple[str, bool, str]  # what, met, the figures behind it


def _rate_at_least(what: str, subject: Row, base: Row, factor: float) -> Target:
    """Whether subject's calls/s reach factor × base's, with both figures."""
    mine, theirs = subject["calls_per_s"], base["calls_per_s"]
    figure = f"{mine:,.0f} vs {theirs:,.0f} /s ({mine / max(theirs, 1e-9):.2f}×)"
    return (what, mine >= factor * theirs, figure)


def _per_stack(figs: dict[Key, Row], stack: str) -> list[Target]:
    """200 workers, 2 s tokens: no 401s; calls ≥ 1.2× and p99 ≤ Authlib's on the stack."""
    tf = figs[(stack, 200, 2.0, TOKENFLIGHT)]
    authlib = figs.get((stack, 200, 2.0, "authlib"), {})
    what = f"B8 {stack}, 200 workers, 2 s tokens: tokenflight"
    if "calls_per_s" not in tf:
        return [(f"{what} runs", False, f"error: {tf['problem']}")]
    zero = tf["idp_401"] == 0 and tf["caller_401"] == 0
    out = [(f"{what} 0 resource 401s", zero, f"{tf['idp_401']} at IdP, {tf['caller_401']} seen")]
    if "calls_per_s" not in authlib:
        return [*out, (f"{what} vs Authlib", False, f"Authlib: {authlib.get('problem')}")]
    p99, theirs = tf["p99_ms"], authlib["p99_ms"]
    return [
        *out,
        _rate_at_least(f"{what} calls/s ≥ 1.2× Authlib's", tf, authlib, 1.2),
        (f"{what} p99 ≤ Authlib's", p99 <= theirs, f"{p99:,.1f} vs {theirs:,.1f} ms"),
    ]


def _on_fastest_stack(figs: dict[Key, Row]) -> list[Target]:
    """On the stack where some contender made the most calls/s: near hand-rolled, p99 ≤ 0.5 s."""
    best = dict.fromkeys(STACKS, 0.0)
    for (stack, workers, lifetime, _), f in figs.items():
        if (workers, lifetime) == (200, 2.0):
            best[stack] = max(best[stack], f.get("calls_per_s", 0.0))
    fastest = max(best, key=lambda s: best[s])
    tf = figs.get((fastest, 200, 2.0, TOKENFLIGHT), {})
    hand = figs.get((fastest, 200, 2.0, "hand-rolled"), {})
    what = f"B8 fastest stack ({fastest}), 200 workers, 2 s tokens: tokenflight"
    if best[fastest] == 0 or "calls_per_s" not in tf or "calls_per_s" not in hand:
        return [(f"{what} vs hand-rolled", False, "no figures")]
    p99 = tf["p99_ms"]
    return [
        _rate_at_least(f"{what} calls/s ≥ 0.9× hand-rolled's", tf, hand, 0.9),
        (f"{what} p99 ≤ 0.5 s", p99 <= 500, f"{p99:,.1f} ms"),
    ]


def _at_scale(figs: dict[Key, Row], stack: str, lifetime: float) -> list[Target]:
    """1,000 workers: no errors, no 401s, and calls/s no more than 10 % below 200 workers'."""
    tf = figs[(stack, 1000, lifetime, TOKENFLIGHT)]
    what = f"B8 {stack}, 1,000 workers, {lifetime:g} s tokens: tokenflight"
    if "calls_per_s" not in tf:
        return [(f"{what} runs", False, f"error: {tf['problem']}")]
    clean = tf["errors"] == 0 and tf["idp_401"] == 0 and tf["caller_401"] == 0
    figure = f"{tf['errors']} errors, {tf['idp_401']} 401s at IdP, {tf['caller_401']} seen"
    out = [(f"{what} 0 errors, 0 401s", clean and not tf["timed_out"], figure)]
    base = figs.get((stack, 200, lifetime, TOKENFLIGHT), {})
    if "calls_per_s" in base:
        out.append(_rate_at_least(f"{what} calls/s within 10 % of 200 workers'", tf, base, 0.9))
    return out


def targets(rows: list[Row]) -> list[Target]:
    """B8's targets, checked against one run's figures: reported, never asserted."""
    figs = figures(rows)
    out: list[Target] = []
    for stack in STACKS:
        if (stack, 200, 2.0, TOKENFLIGHT) in figs:
            out += _per_stack(figs, stack)
    if any(k[1:3] == (200, 2.0) for k in figs):
        out += _on_fastest_stack(figs)
    for stack, workers, lifetime, name in sorted(figs):
        if workers == 1000 and name == TOKENFLIGHT:
            out += _at_scale(figs, stack, lifetime)
    return out
