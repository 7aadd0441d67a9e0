"""What `benchmarks/run.py` shows: plain lines or a live display, the summary, Ctrl-C.

The runner's loop runs with stand-ins for the identity provider process and the
scenarios (the real benchmarks take minutes); the display and the summary are real.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar

import pytest

from helpers import load_benchmark

bench = load_benchmark("run")  # puts benchmarks/ on sys.path: its modules import by name
display = bench.display  # the modules the runner imported
processes = bench.processes

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeIdP:
    """Stands for `IdPProcess`: no process, a URL, and whether it was stopped."""

    instances: ClassVar[list[FakeIdP]] = []

    def __init__(self, latency: float) -> None:
        self.pinned = False
        self.argv = ["python", "-m", "tokenflight", "idp"]
        self.url = self.token_url = self.resource_url = "http://127.0.0.1:9"
        self.stopped = False
        FakeIdP.instances.append(self)

    def start(self) -> str:
        return self.url

    def stop(self) -> None:
        self.stopped = True


class FakeAdmin:
    def __init__(self, url: str) -> None:
        pass

    async def reset(self) -> float:
        return 0.0

    async def aclose(self) -> None:
        pass


async def b1_met(env: Any, contender: Any, rnd: int, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"token_requests": 1, "errors": 0, "callers_served": 1000, "timed_out": False}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """run.py with a fake IdP and admin, B1 as `b1_met`, and a report writer that records."""
    written: dict[str, Any] = {}

    def write(rows: list[dict[str, Any]], cfg: Any, info: Any, out: Path) -> dict[str, Path]:
        written["rows"] = rows
        return {"markdown": out / "report.md"}

    FakeIdP.instances.clear()
    monkeypatch.setattr(bench, "IdPProcess", FakeIdP)
    monkeypatch.setattr(bench, "Admin", FakeAdmin)
    monkeypatch.setattr(bench, "machine", dict)
    monkeypatch.setattr(bench.report, "write", write)
    monkeypatch.setitem(bench.IN_PROCESS, "B1", b1_met)
    return written


def run_bench(out: StringIO, *args: str, tmp: Path) -> int:
    return int(bench.main(["--quick", *args, "--out", str(tmp)], out=out))


def test_plain_output_when_not_a_terminal(runner, tmp_path):
    """Not on a terminal: today's plain lines per step, a headline, the summary as text."""
    out = StringIO()
    assert run_bench(out, "--only", "B1", tmp=tmp_path) == 0
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "B1 ..."
    assert re.fullmatch(r"  B1 round 1 tokenflight: \d+\.\d s", lines[1]), lines
    assert re.search(r"^B1 done in \d+ s: 1 token request \(minimum 1\), 0 errors$", text, re.M)
    assert re.search(r"^Summary\n  scenario  headline\s+targets\n  B1  ", text, re.M), text
    assert "met (1 of 1)" in text
    assert re.search(r"^done in \d+ s: .*report\.md$", text, re.M)
    assert len(runner["rows"]) == len(bench.CONTENDERS)


def test_on_a_terminal_the_display_is_live_and_the_summary_a_table(runner, tmp_path):
    """On a terminal with rich, progress is redrawn in place; the summary is a rich table."""
    out = Terminal()
    assert run_bench(out, "--only", "B1", tmp=tmp_path) == 0
    text = out.getvalue()
    assert "\x1b[2K" in text  # the live line is erased and redrawn
    plain = ESCAPES.sub("", text)
    assert "  B1 round 1 tokenflight" not in plain  # steps update the live line instead
    assert "B1 done in" in plain
    assert re.search(
        r"│ B1\s+│ 1 token request \(minimum 1\), 0 errors\s+│ met \(1 of 1\) │", plain
    )


def test_the_summary_table_from_given_results():
    """Each scenario's line: tokenflight's headline and how many of its targets it met."""
    short = {"tenants": 10, "duration": 2.2, "lifetime": 2.0, "token_requests": 20, "ideal": 20}
    short |= {"caller_401": 3, "idp_401": 1, "errors": 0, "p99_ms": 50.0, "max_ms": 60.0}
    long = {"p99_ms": 50.0, "max_ms": 60.0}
    rows = [
        {"scenario": "B1", "round": 1, "contender": "tokenflight", "token_requests": 1},
        {"scenario": "B1", "round": 1, "contender": "naive", "token_requests": 1},
        {"scenario": "B3", "round": 1, "contender": "tokenflight", "short": short, "long": long},
        {"scenario": "FAIR", "round": 1, "contender": "tokenflight", "config": "default"}
        | {"healthy_s": 0.045, "slow_done_s": 3.1, "slow_tokens": 30, "errors": []},
        {"scenario": "B2", "round": 1, "contender": "tokenflight", "error": "boom"},
    ]
    lines = display.summary(rows, {"rounds": 1}, ["B1", "B3", "FAIR", "B2"])
    assert lines == [
        ["B1", "1 token request (minimum 1), 0 errors", "met (1 of 1)"],
        ["B3", "2 s tokens: 20 token requests (ideal 20), 4 401s, 0 errors", "missed 1 of 3"],
        ["FAIR", "healthy tenant's cold get_token 45 ms beside a slow provider", "met (1 of 1)"],
        ["B2", "error: boom", "\N{EN DASH}"],
    ]
    out = StringIO()
    display.print_summary(out, rows, {"rounds": 1}, ["B1", "B3"], "Summary")
    assert out.getvalue().splitlines() == [
        "",
        "Summary",
        "  scenario  headline                                                    targets",
        "  B1        1 token request (minimum 1), 0 errors                       met (1 of 1)",
        "  B3        2 s tokens: 20 token requests (ideal 20), 4 401s, 0 errors  missed 1 of 3",
    ]


def test_ctrl_c_prints_the_summary_so_far_and_exits_130(runner, tmp_path, monkeypatch):
    """Ctrl-C in B2: its child is terminated, B1's summary printed, no report, exit 130."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    async def interrupted(env: Any, contender: Any, rnd: int, cfg: Any) -> dict[str, Any]:
        processes.track(child)  # a scenario's child process, running when Ctrl-C comes
        signal.raise_signal(signal.SIGINT)  # as Ctrl-C: asyncio.run cancels the main task
        await asyncio.sleep(60)  # cancelled at once
        raise AssertionError("not interrupted")

    monkeypatch.setitem(bench.IN_PROCESS, "B2", interrupted)
    out = StringIO()
    try:
        assert run_bench(out, "--only", "B1,B2", tmp=tmp_path) == 130
        assert child.poll() is not None  # terminated, and waited for
    finally:
        child.kill()
        child.wait()
    text = out.getvalue()
    assert "Summary (interrupted: 1 of 2 scenarios finished)" in text
    assert re.search(r"^  B1\s+1 token request \(minimum 1\), 0 errors\s+met", text, re.M)
    assert not re.search(r"^  B2 ", text, re.M)
    assert FakeIdP.instances[0].stopped
    assert "rows" not in runner  # no report from a partial run


def test_a_failed_child_shows_its_stderr(tmp_path):
    """A child that fails shows its stderr's last lines; one that succeeds shows nothing."""
    fail = "import sys; print('out'); sys.stderr.write('first\\nboom\\n'); sys.exit(3)"
    out = StringIO()
    run = display.Run({"rounds": 1, "mode": "quick"}, ["B8"])
    with display.showing(run, out):
        done = processes.run_captured([sys.executable, "-c", "print('fine')"], 30)
        assert (done.returncode, done.stdout) == (0, "fine\n")
        assert out.getvalue() == ""
        failed = processes.run_captured([sys.executable, "-c", fail], 30)
    assert (failed.returncode, failed.stdout) == (3, "out\n")
    assert out.getvalue() == "-c exited with status 3:\nfirst\nboom\n"
