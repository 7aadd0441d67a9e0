"""PNG plots where a picture reads faster than a table (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {
    "tokenflight": "tab:blue",
    "naive": "tab:red",
    "hand-rolled": "tab:green",
    "authlib": "tab:orange",
    "httpx-auth": "tab:purple",
    "tokenflight-auth": "tab:cyan",
}


def _last(rows: list[dict[str, Any]], scenario: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["scenario"] == scenario and "error" not in row:
            out[row["contender"]] = row  # the last round wins
    return out


def _latency(b3: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, row in b3.items():
        for run, style in (("short", "-"), ("long", ":")):
            sample = [v * 1000 for v in row[run]["latency_sample"]]
            if not sample:
                continue
            ys = [(i + 1) / len(sample) for i in range(len(sample))]
            label = f"{name} ({'2 s' if run == 'short' else '3600 s'} tokens)"
            ax.plot(sample, ys, style, color=COLORS.get(name), label=label, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_xlabel("caller latency, ms (log)")
    ax.set_ylabel("fraction of calls ≤ x")
    ax.set_title("B3: latency at expiry (solid: 2-second tokens; dotted: long tokens)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _token_times(b3: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, row in b3.items():
        times = sorted(row["short"]["token_times"])
        if times:
            ax.step(
                times,
                range(1, len(times) + 1),
                where="post",
                color=COLORS.get(name),
                label=f"{name}: {len(times):,}",
            )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start (IdP clock)")
    ax.set_ylabel("token requests so far (log)")
    ax.set_title("B3: token requests over time, 2-second tokens")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _memory(rows: list[dict[str, Any]], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for row in rows:
        if row["scenario"] == "B5" and "points" in row:
            xs = [p["tenants"] for p in row["points"]]
            ys = [(p["rss"] - row["base_rss"]) / 2**20 for p in row["points"]]
            ax.plot(xs, ys, "o-", color="black", label="tokenflight, cached (B5)")
            drawn = True
    by_name: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["scenario"] == "B4" and row.get("peak_rss") and row.get("base_rss"):
            mib = (row["peak_rss"] - row["base_rss"]) / 2**20
            by_name.setdefault(row["contender"], []).append((row["tenants"], mib))
    for name, points in by_name.items():
        points.sort()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            "s--",
            color=COLORS.get(name),
            label=f"{name}, cold burst peak (B4)",
        )
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("tenants (log)")
    ax.set_ylabel("MiB over the process's start")
    ax.set_title("Client memory against tenant count")
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _calls(rows: list[dict[str, Any]], path: Path) -> bool:
    """B8: calls/s (top) and p99 latency (bottom) per stack, one bar per contender and case."""
    import scenario_calls

    figs = scenario_calls.figures(rows)
    stacks = [s for s in scenario_calls.STACKS if any(k[0] == s for k in figs)]
    cases = sorted({(k[1], k[2]) for k in figs})
    if not stacks:
        return False
    names = scenario_calls.CONTENDERS
    fig, axes = plt.subplots(2, len(stacks), figsize=(4.2 * len(stacks), 7), squeeze=False)
    width = 0.8 / len(names)
    for col, stack in enumerate(stacks):
        for row, (field, label) in enumerate((("calls_per_s", "calls/s"), ("p99_ms", "p99 ms"))):
            ax = axes[row][col]
            for i, name in enumerate(names):
                xs = [c + (i - (len(names) - 1) / 2) * width for c in range(len(cases))]
                ys = [figs.get((stack, *case, name), {}).get(field, 0.0) for case in cases]
                ax.bar(xs, ys, width, color=COLORS.get(name), label=name)
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels([f"{w:,} w\n{life:g} s" for w, life in cases], fontsize=8)
            ax.set_ylabel(label)
            if field == "p99_ms":
                ax.set_yscale("log")
            ax.set_title(f"{stack}: {label}", fontsize=10)
            ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("B8: authorized calls at scale (workers, token lifetime); no bar: no figure")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    b3 = {k: v for k, v in _last(rows, "B3").items() if "short" in v}
    if b3:
        paths["b3_latency"] = out / "b3_latency.png"
        _latency(b3, paths["b3_latency"])
        paths["b3_token_requests"] = out / "b3_token_requests.png"
        _token_times(b3, paths["b3_token_requests"])
    if _memory(rows, out / "memory.png"):
        paths["memory"] = out / "memory.png"
    if _calls(rows, out / "b8_calls.png"):
        paths["b8_calls"] = out / "b8_calls.png"
    return paths
