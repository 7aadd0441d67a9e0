# ruff: noqa: RUF001  (the multiplication sign in headlines is meant)
"""What a benchmark run shows while it runs, and the summary at its end.

On a terminal with rich (tokenflight's `cli` extra): one live line (the scenario and its
round, the time elapsed against the total estimated from the mode, the last step done),
each finished scenario's headline above it, and a summary table at the end. Elsewhere:
the runner's plain lines, one per step as before, a headline line per finished scenario,
and the summary as aligned text. Scenario modules report their steps through `step()`;
run alone (no `showing()` block), a step is printed as it always was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tokenflight._live import Fields, Progress, live_progress, print_table

Row = dict[str, Any]
TF = "tokenflight"

#: Seconds one round of each scenario takes on a 2-core machine, by mode (for elapsed/total):
#: quick as measured (3:24 in all), full scaled from it by each scenario's settings.
ROUND_S: dict[str, dict[str, int]] = {
    "quick": {"B1": 5, "B2": 5, "B3": 35, "B4": 15, "B5": 5, "B6": 5, "B7": 5, "B8": 100}
    | {"B9": 30, "FAIR": 10},
    "full": {"B1": 5, "B2": 10, "B3": 200, "B4": 300, "B5": 120, "B6": 5, "B7": 50, "B8": 550}
    | {"B9": 30, "FAIR": 10},
}


def rounds(name: str, cfg: Row) -> int:
    """How many rounds scenario ``name`` runs in ``cfg``."""
    if name in ("B4", "B5", "B9"):
        return 1
    return int(cfg.get(f"{name.lower()}_rounds") or cfg["rounds"])


def estimate(name: str, cfg: Row) -> float:
    """Seconds scenario ``name`` is expected to take in ``cfg``'s mode."""
    per_round = ROUND_S.get(cfg.get("mode", "quick"), ROUND_S["quick"]).get(name, 10)
    return float(per_round * rounds(name, cfg))


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Run:
    """One run's progress: what runs now, what is done, and the time left by estimate."""

    def __init__(self, cfg: Row, names: list[str]) -> None:
        self._cfg = cfg
        self._pending = list(names)
        self._progress: Progress | None = None  # set by `showing()`
        self._started = self._scenario_started = time.monotonic()
        self.scenario = ""
        self.round = 1
        self.last = ""
        self.finished: list[str] = []

    def fields(self) -> Fields:
        """The live line: scenario and round, elapsed / estimated total, the last step."""
        now = time.monotonic()
        elapsed = now - self._started
        left = sum(estimate(name, self._cfg) for name in self._pending)
        if self.scenario:
            spent = now - self._scenario_started
            left += max(estimate(self.scenario, self._cfg) - spent, 0.0)
        fields = [
            ("scenario", f"{self.scenario} round {self.round}/{rounds(self.scenario, self._cfg)}")
            if self.scenario
            else ("scenario", "between scenarios" if self.finished else "starting"),
            ("elapsed", f"{clock(elapsed)} / ~{clock(elapsed + left)}"),
        ]
        return [*fields, ("last", self.last)] if self.last else fields

    def begin(self, name: str) -> None:
        """Scenario ``name`` starts."""
        if name in self._pending:
            self._pending.remove(name)
        self.scenario, self.round, self.last = name, 1, ""
        self._scenario_started = time.monotonic()
        if not self._is_live():
            self._line(f"{name} ...")

    def step(self, text: str, rnd: int | None) -> None:
        """A step of the scenario is done: ``text`` says which and how long it took."""
        if rnd is not None:
            self.round = rnd
        self.last = text.strip()
        if not self._is_live():
            self._line(text)

    def note(self, text: str) -> None:
        """Something to show at once (a child's output when it failed)."""
        self._line(text)

    def finish(self, name: str, rows: list[Row]) -> None:
        """Scenario ``name`` is done; its headline is shown."""
        took = time.monotonic() - self._scenario_started
        self.finished.append(name)
        self.scenario = self.last = ""
        self._line(f"{name} done in {took:.0f} s: {headline(name, rows)}")

    def _is_live(self) -> bool:
        return self._progress is not None and self._progress.is_live

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.line(text)
        else:
            print(text, flush=True)


_current: Run | None = None


@contextmanager
def showing(run: Run, out: TextIO) -> Iterator[None]:
    """Show ``run``'s progress on ``out`` for the duration of the block."""
    global _current
    with live_progress(out) as progress:
        run._progress = progress
        progress.follow(run.fields)
        _current = run
        try:
            yield
        finally:
            _current = None
            run._progress = None


def begin(name: str) -> None:
    if _current is not None:
        _current.begin(name)


def step(text: str, rnd: int | None = None) -> None:
    """Report a finished step (``text``: today's plain line); printed when no run shows."""
    if _current is not None:
        _current.step(text, rnd)
    else:
        print(text, flush=True)


def note(text: str) -> None:
    if _current is not None:
        _current.note(text)
    else:
        print(text, flush=True)


def finish(name: str, rows: list[Row]) -> None:
    if _current is not None:
        _current.finish(name, rows)


# -- headlines: a scenario's key figures, tokenflight's (all rounds) -----------------------


def _n(count: Any, word: str) -> str:
    if not isinstance(count, (int, float)) or isinstance(count, bool):
        return f"? {word}s"
    return f"{count:,.0f} {word}{'' if count == 1 else 's'}"


def _sum(rows: list[Row], key: str) -> Any:
    return sum(r.get(key) or 0 for r in rows)


def _b1(tf: list[Row]) -> str:
    requests = _sum(tf, "token_requests")
    return f"{_n(requests, 'token request')} (minimum {len(tf)}), {_n(_sum(tf, 'errors'), 'error')}"


def _b2(tf: list[Row]) -> str:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in tf))

    return (
        f"cached get_token {med('get_us'):.3f} µs ({med('get_vs_hand'):.2f}× a hand-rolled "
        f"hit), auth overhead {med('overhead_us'):.1f} µs per request"
    )


def _b3(tf: list[Row]) -> str:
    short = [r["short"] for r in tf]
    ideal = _sum(short, "ideal")
    bad = _sum(short, "caller_401") + _sum(short, "idp_401")
    requests = _n(_sum(short, "token_requests"), "token request")
    errors = _n(_sum(short, "errors"), "error")
    return f"2 s tokens: {requests} (ideal {ideal:,}), {bad} 401s, {errors}"


def _b4(tf: list[Row]) -> str:
    parts = []
    for r in tf:
        if r.get("error"):
            parts.append(f"{r['tenants']:,} tenants: {r['error']}")
            continue
        served = "in" if not r.get("timed_out") else "timed out after"
        parts.append(
            f"{r['tenants']:,} tenants: {_n(r['token_requests'], 'token request')} "
            f"(minimum {r['tenants']:,}) {served} {r['wall_s']:.2f} s"
        )
    return "; ".join(parts)


def _b5(tf: list[Row]) -> str:
    last = tf[-1]
    point = last["points"][-1]
    tasks = sorted({p["tasks"] for p in last["points"]} | {last["idle_tasks"]})
    return (
        f"{point['tenants']:,} tenants: {point['bytes_per_slot']:,.0f} bytes per slot, "
        f"background tasks {', '.join(map(str, tasks))}"
    )


def _b6(tf: list[Row]) -> str:
    got = [v["got_token"] for r in tf for v in r.values() if isinstance(v, dict)]
    return f"first call got a token under {sum(got)} of {len(got)} faults"


def _b7(tf: list[Row]) -> str:
    one = _sum([r["wave1"] for r in tf], "token_requests")
    two = _sum([r["wave2"] for r in tf], "token_requests")
    return (
        f"wrong secret: {_n(one, 'token request')} in wave 1 (minimum {len(tf)}), "
        f"{two} in wave 2 (minimum 0)"
    )


def _b8(tf: list[Row]) -> str:
    ok = [r for r in tf if "calls_per_s" in r and not r.get("error")]
    if not ok:
        return f"no figures: {tf[-1].get('error', 'no case ran')}"
    best = max(ok, key=lambda r: r["calls_per_s"])
    where = f"{best['stack']}, {best['workers']:,} workers, {best['lifetime']:g} s tokens"
    failed = len(tf) - len(ok)
    return (
        f"up to {best['calls_per_s']:,.0f} calls/s ({where}); {_sum(ok, 'idp_401')} 401s, "
        f"{_n(_sum(ok, 'errors'), 'error')} in {len(ok)} cases"
        + (f"; {failed} cases failed" if failed else "")
    )


def _b9(tf: list[Row]) -> str:
    r = tf[-1]
    return (
        f"{_n(r['token_requests'], 'token request')} (minimum {r['minimum']:,}) "
        f"for {r['calls']:,} calls"
    )


def _fair(tf: list[Row]) -> str:
    runs = [r for r in tf if r.get("config") == "default" and "healthy_s" in r]
    worst = max(r["healthy_s"] for r in runs)
    return f"healthy tenant's cold get_token {worst * 1000:,.0f} ms beside a slow provider"


HEADLINES: dict[str, Callable[[list[Row]], str]] = {
    "B1": _b1,
    "B2": _b2,
    "B3": _b3,
    "B4": _b4,
    "B5": _b5,
    "B6": _b6,
    "B7": _b7,
    "B8": _b8,
    "B9": _b9,
    "FAIR": _fair,
}


def headline(name: str, rows: list[Row]) -> str:
    """Scenario ``name``'s key figures for tokenflight, from the rows of one run."""
    tf = [r for r in rows if r["scenario"] == name and r["contender"] == TF]
    if not tf:
        return "no tokenflight figures"
    errors = [r["error"] for r in tf if r.get("error") and name not in ("B4", "B8")]
    if errors:
        return f"error: {errors[-1]}"
    try:
        return HEADLINES[name](tf)
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # a row without figures
        return f"no figures ({type(exc).__name__}: {exc})"[:120]


# -- the summary ---------------------------------------------------------------------------


def summary(rows: list[Row], cfg: Row, names: list[str]) -> list[list[str]]:
    """One line per scenario in ``names``: scenario, headline, targets met or missed."""
    import targets

    done = [r for r in rows if r["scenario"] in names]
    try:
        checks = targets.check(done, cfg)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        checks = [(f"{name} targets", "**no**", f"not checked: {exc!r}") for name in names]
    lines = []
    for name in names:
        mine = [met for what, met, _ in checks if what.split(" ", 1)[0] == name]
        missed = mine.count("**no**")
        if not mine:
            verdict = "–"
        elif missed:
            verdict = f"missed {missed} of {len(mine)}"
        else:
            verdict = f"met ({len(mine)} of {len(mine)})"
        lines.append([name, headline(name, done), verdict])
    return lines


def print_summary(out: TextIO, rows: list[Row], cfg: Row, names: list[str], title: str) -> None:
    """Print the summary table of the scenarios in ``names``."""
    lines = summary(rows, cfg, names)
    if not lines:
        print(f"\n{title}: no scenario finished", file=out, flush=True)
        return
    print_table(out, title, ["scenario", "headline", "targets"], lines)
