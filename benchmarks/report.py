# ruff: noqa: RUF001  (the multiplication sign and en dash in report text are meant)
"""Turn the raw rows into results.json, a Markdown report with one table per scenario, and plots."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import scenario_calls
import scenario_economy
import scenario_fairness
import targets

TF = "tokenflight"
Row = dict[str, Any]
Agg = dict[Any, Row]  # contender (or a tuple of keys) -> median figures over rounds


def flatten(row: Row, prefix: str = "") -> Row:
    out: Row = {}
    for key, value in row.items():
        if isinstance(value, dict) and key not in ("seen", "statuses"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def aggregate(rows: list[Row], scenario: str, by: tuple[str, ...] = ("contender",)) -> Agg:
    """Median of each numeric figure over rounds, per contender (and `by` keys)."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        if row["scenario"] == scenario:
            flat = flatten(row)
            groups[tuple(flat.get(k) for k in by)].append(flat)
    result: Agg = {}
    for key, group in groups.items():
        merged: Row = {}
        for field in group[-1]:
            values = [g[field] for g in group if field in g]
            numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numeric) == len(values) and numeric:
                merged[field] = statistics.median(numeric)
            elif values and all(isinstance(v, bool) for v in values):
                merged[field] = any(values) if field.endswith("timed_out") else all(values)
            else:
                merged[field] = values[-1] if values else None
            merged[f"{field}#rounds"] = len(values)
        result[key if len(by) > 1 else key[0]] = merged
    return result


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and digits < 3):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def ratio(value: Any, base: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
        return "–"
    if base == 0:
        return "=" if value == 0 else "∞"
    if base < 0 or value < 0:
        return "–"  # a difference within the noise: no meaningful ratio
    return f"{value / base:,.2f}×"


def table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def status(row: Row) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    if not row.get("timed_out"):
        return "completed"
    text = f"timed out after {row['limit']:.0f} s"
    if row.get("tenants_set_up", row["tenants"]) < row["tenants"]:
        text += f" (only {row['tenants_set_up']:,} tenants set up)"
    return text


def _b1(agg: Agg) -> str:
    tf = agg.get(TF, {})
    lines = [
        [
            name,
            num(r.get("token_requests")),
            ratio(r.get("token_requests"), tf.get("token_requests")),
            num(r.get("wall_ms")),
            ratio(r.get("wall_ms"), tf.get("wall_ms")),
            num(r.get("distinct_tokens")),
            num(r.get("callers_served")),
            num(r.get("errors")) if not r.get("error") else r["error"],
        ]
        for name, r in agg.items()
    ]
    header = [
        "contender",
        "token requests",
        "× tf",
        "wall ms",
        "× tf",
        "distinct tokens",
        "callers served",
        "errors",
    ]
    return table(header, lines)


def _b2_flow(tf: Row) -> str:
    if "flow_us" not in tf:
        return ""
    return (
        f"\n\ntokenflight's auth flow driven by hand as httpx drives it (no I/O, medians of 5 "
        f"runs): {num(tf['flow_us'], 2)} µs per request, against {num(tf['static_flow_us'], 2)} "
        f"µs for a flow that sets a fixed Bearer header ({tf['flow_overhead_us']:+.2f} µs)."
    )


def _b2(agg: Agg) -> str:
    tf = agg.get(TF, {})
    first = [
        [
            name,
            num(r.get("get_us"), 3),
            num(r.get("hand_us"), 3),
            ratio(r.get("get_us"), r.get("hand_us")),
            ratio(r.get("get_us"), tf.get("get_us")),
            num(r.get("get_calls")),
        ]
        for name, r in agg.items()
    ]
    second = [
        [
            name,
            num(r.get("request_us")),
            num(r.get("bare_request_us")),
            num(r.get("overhead_us"), 2),
            ratio(r.get("overhead_us"), tf.get("overhead_us")),
            num(r.get("requests")),
        ]
        for name, r in agg.items()
    ]
    return (
        "Cached token, sequential calls:\n\n"
        + table(
            [
                "contender",
                "µs per get_token",
                "µs per hand-rolled hit (same chunks)",
                "× hand-rolled hit",
                "× tf",
                "calls timed",
            ],
            first,
        )
        + _b2_flow(tf)
        + "\n\nRequests over `httpx.MockTransport`, with the contender's auth against none:\n\n"
        + table(
            [
                "contender",
                "µs per request",
                "µs bare request",
                "auth overhead µs",
                "× tf",
                "requests timed",
            ],
            second,
        )
    )


def _b3(agg: Agg) -> str:
    tf = agg.get(TF, {})
    lines = []
    for prefix, gate in (("", "≤ 16 in flight"), ("ungated_", "**ungated**")):
        s, long = prefix + "short.", prefix + "long."
        for name, r in agg.items():
            if prefix and s + "calls" not in r:
                continue  # a contender that failed shows its row once, with the gated ones
            lines.append(
                [
                    name,
                    gate,
                    num(r.get(s + "token_requests")),
                    num(r.get(s + "ideal")),
                    ratio(r.get(s + "token_requests"), r.get(s + "ideal")),
                    ratio(r.get(s + "token_requests"), tf.get(s + "token_requests")),
                    num(r.get(s + "caller_401")),
                    num(r.get(s + "idp_401")),
                    num(r.get(s + "errors")),
                    num(r.get(s + "calls")),
                    f"{num(r.get(s + 'p50_ms'), 2)} ({num(r.get(long + 'p50_ms'), 2)})",
                    f"{num(r.get(s + 'p99_ms'), 2)} ({num(r.get(long + 'p99_ms'), 2)})",
                    f"{num(r.get(s + 'max_ms'), 1)} ({num(r.get(long + 'max_ms'), 1)})",
                    ratio(r.get(s + "p99_ms"), tf.get(s + "p99_ms")),
                ]
            )
    header = [
        "contender",
        "gate",
        "token requests",
        "ideal",
        "× ideal",
        "× tf",
        "401s (callers)",
        "401s (IdP)",
        "errors",
        "calls",
        "p50 ms (long)",
        "p99 ms (long)",
        "max ms (long)",
        "p99 × tf",
    ]
    return table(header, lines)


def _b4(agg: Agg) -> str:
    parts = []
    for tenants, callers in sorted({(k[1], k[2]) for k in agg}):
        phase = {k[0]: r for k, r in agg.items() if (k[1], k[2]) == (tenants, callers)}
        tf = phase.get(TF, {})
        lines = []
        for name, r in phase.items():
            peak = r.get("peak_rss")
            base = r.get("base_rss")
            mem = f"{peak / 2**20:,.0f} (+{(peak - base) / 2**20:,.0f})" if peak and base else "–"
            lines.append(
                [
                    name,
                    num(r.get("token_requests")),
                    ratio(r.get("token_requests"), tf.get("token_requests")),
                    num(r.get("wall_s"), 2),
                    ratio(r.get("wall_s"), tf.get("wall_s")),
                    num(r.get("connections")),
                    mem,
                    f"{num(r.get('served'))} / {tenants * callers:,}",
                    status(r),
                ]
            )
        header = [
            "contender",
            "token requests",
            "× tf",
            "wall s",
            "× tf",
            "IdP connections",
            "peak RSS MiB (+ over start)",
            "callers served",
            "status",
        ]
        parts.append(f"{tenants:,} tenants × {callers} callers, cold:\n\n" + table(header, lines))
    return "\n\n".join(parts)


def _b5(rows: list[Row]) -> str:
    b5 = [r for r in rows if r["scenario"] == "B5"]
    if not b5:
        return "(not run)"
    r = b5[-1]
    if r.get("error"):
        return f"error: {r['error']}"
    lines = [
        [
            num(p["tenants"]),
            f"{p['rss'] / 2**20:,.0f}",
            num(p["bytes_per_slot"], 0),
            num(p["tasks"]),
        ]
        for p in r["points"]
    ]
    return (
        table(
            [
                "tenants cached",
                "RSS MiB",
                "bytes per slot (RSS delta / tenants)",
                "background tasks",
            ],
            lines,
        )
        + f"\n\nIdle with all {r['points'][-1]['tenants']:,} cached: "
        f"{r['idle_cpu_ms_per_s']:.2f} ms CPU per second, {r['idle_tasks']} background task(s); "
        f"100 active tenants calling: {r['active_calls_per_s']:,.0f} get_token/s, "
        f"{r['active_tasks']} background task(s). Token requests: {r['fetches']:,}."
    )


def _b6(agg: Agg) -> str:
    labels = sorted({k.split(".")[0] for r in agg.values() for k in r if k.endswith(".outcome")})
    lines = []
    for label in labels:
        tf = agg.get(TF, {})
        for name, r in agg.items():
            p = label + "."
            lines.append(
                [
                    label,
                    name,
                    "token" if r.get(p + "got_token") else str(r.get(p + "outcome")),
                    num(r.get(p + "token_requests")),
                    num(r.get(p + "time_ms")),
                    ratio(r.get(p + "time_ms"), tf.get(p + "time_ms")),
                ]
            )
    return table(["fault", "contender", "first call", "IdP requests", "time ms", "× tf"], lines)


def _seen(value: Any, timed_out: Any = False) -> str:
    if not isinstance(value, dict):
        return "–"
    text = ", ".join(f"{k} ×{n}" for k, n in sorted(value.items()))
    return text + (" (the rest still waiting at the time limit)" if timed_out else "")


def _b7(agg: Agg) -> str:
    tf = agg.get(TF, {})
    lines = [
        [
            name,
            num(r.get("wave1.token_requests")),
            num(r.get("wave2.token_requests")),
            ratio(r.get("wave1.token_requests"), tf.get("wave1.token_requests")),
            _seen(r.get("wave1.seen"), r.get("wave1.timed_out")),
            _seen(r.get("wave2.seen"), r.get("wave2.timed_out")),
            f"{num(r.get('wave1.time_ms'))} / {num(r.get('wave2.time_ms'))}",
        ]
        for name, r in agg.items()
    ]
    header = [
        "contender",
        "IdP requests wave 1",
        "wave 2",
        "wave 1 × tf",
        "callers see (1)",
        "callers see (2)",
        "wave ms (1 / 2)",
    ]
    return table(header, lines)


SECTIONS = {
    "B1": ("B1 cold stampede", "1 tenant, {b1_callers:,} concurrent callers, cold cache."),
    "B2": (
        "B2 hot path",
        "A cached token; medians of 20 chunks alternating with a hand-rolled cache's hit (a "
        "dict look-up and a `time.monotonic()` check, awaited like `get_token`). "
        "tokenflight-otel: tokenflight with `OpenTelemetryInstrumentation` (SDK providers) "
        "and a no-op hook.",
    ),
    "B3": (
        "B3 expiry under load",
        "{b3_workers} workers over {b3_tenants} tenants call "
        "/api/resource for {b3_duration} s with {b3_lifetime:g}-second tokens (in brackets: "
        "the same load for {b3_long_duration} s with 3600-second tokens). Gated rows: at most "
        "16 resource requests in flight for every contender (a bound of the benchmark's). "
        "Ungated rows: the same workload without that bound, only what each library does "
        "itself; `× tf` compares rows of the same kind. "
        "Ideal: one token per tenant per lifetime.",
    ),
    "B4": (
        "B4 many tenants",
        "Each contender in a fresh process, its callers asyncio tasks; time limit {b4_limit:g} s "
        "(from 10,000 tenants tokenflight alone, run to completion: a 600 s guard).",
    ),
    "B5": (
        "B5 scale (tokenflight only)",
        "{b5_tenants:,} tenants registered and fetched "
        "(token responses from `httpx.MockTransport`, so the IdP is not the bottleneck).",
    ),
    "B6": (
        "B6 faults on the first call",
        "The fault hits the first token request(s) of a cold tenant.",
    ),
    "B7": (
        "B7 wrong secret",
        "{b7_callers} concurrent callers, then {b7_callers} more; "
        "each wave stops after {b7_limit:g} s.",
    ),
    "B8": (
        "B8 authorized calls at scale",
        "{b8_tenants} tenant(s); W workers each loop `GET /api/resource` for {b8_duration:g} s "
        "through one shared client per contender, with no bound from the benchmark (only what "
        "the library does itself); every case in a fresh child process, all contenders of a "
        "table on the same HTTP stack. tokenflight: `tokens.client(tenant, stack=...)`; "
        "tokenflight-auth: a default client of the stack with `auth=tokens.auth(tenant)`; "
        "hand-rolled: a dict and an `asyncio.Lock`, tokens fetched and requests sent on one "
        'default client; authlib: `AsyncOAuth2Client(grant_type="client_credentials")` '
        "(on httpx in the httpx table, on httpx2 elsewhere). calls/s counts the 2xx responses "
        "completed from a quarter of the window (at most 1 s: the W workers' first requests "
        "are all built at once) to its end; latencies cover every call; loop lag is how late a "
        "{lag_ms:g} ms sleep wakes up. 401s at the IdP are the resource's rejections; "
        "`× authlib` and `× hand-rolled` compare with those contenders on the same stack "
        "and case.",
    ),
    "B9": (
        "B9 token economy (tokenflight only)",
        "{b9_tenants:,} tenants with 24-hour tokens, each calling `get_token` at random "
        "intervals of 1-60 minutes over a simulated day (trio's MockClock); the minimum is "
        "one token request per tenant. Memory: tracemalloc, what the manager holds at the "
        "end of the day.",
    ),
    "FAIR": scenario_fairness.SECTION,
}


def markdown(rows: list[Row], cfg: Row, info: Row, checks: list[tuple[str, str, str]]) -> str:
    for row in rows:
        row.setdefault("limit", cfg["b4_limit"])
    aggs = {
        "B1": _b1(aggregate(rows, "B1")),
        "B2": _b2(aggregate(rows, "B2")),
        "B3": _b3(aggregate(rows, "B3")),
        "B4": _b4(aggregate(rows, "B4", ("contender", "tenants", "callers"))),
        "B5": _b5(rows),
        "B6": _b6(aggregate(rows, "B6")),
        "B7": _b7(aggregate(rows, "B7")),
        "B8": scenario_calls.table(rows),
        "B9": scenario_economy.table(rows),
        "FAIR": scenario_fairness.table(rows),
    }
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    out = [
        f"# tokenflight benchmarks ({cfg['mode']} mode)",
        "",
        f"Machine: {info['cores']} cores, {info['implementation']} {info['python']}, "
        f"{info['platform']}, load average {info['load_average'][0]} at the end "
        "(other work on the machine shows up as noise). "
        f"Libraries: {versions}.",
        f"IdP: `{cfg['idp_argv']}` in its own process"
        + (", pinned to another core than the client." if cfg.get("idp_pinned") else ".")
        + f" Rounds: {cfg['rounds']} (medians shown). Run time: {cfg.get('elapsed_s', 0):.0f} s.",
        "`× tf` is the ratio to tokenflight's figure in the same table.",
        "",
        "## Targets",
        "",
        table(["target", "met", "figure"], [list(c) for c in checks]),
    ]
    present = {r["scenario"] for r in rows}
    for name, (title, text) in SECTIONS.items():
        if name in present:
            text = text.format(**cfg, lag_ms=scenario_calls.LAG_TICK * 1000)
            out += ["", f"## {title}", "", text, "", aggs[name]]
    out += ["", "## Notes", "", *[f"- {n}" for n in targets.NOTES]]
    return "\n".join(out) + "\n"


def write(rows: list[Row], cfg: Row, info: Row, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    checks = targets.check(rows, cfg)
    paths = {"markdown": out / "report.md", "json": out / "results.json"}
    paths["markdown"].write_text(markdown(rows, cfg, info, checks), encoding="utf-8")
    raw = {"config": cfg, "machine": info, "targets": checks, "rows": rows}
    paths["json"].write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    import plots  # matplotlib: only where the report is written (tests import this module)

    paths.update(plots.draw(rows, out))
    return paths
