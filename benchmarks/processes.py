"""The run's child processes: their output captured, each one terminated when the run stops.

Children write nothing to the terminal (a live display would be garbled): `run_captured`
keeps a child's output and hands it back, the failed ones' to `display.note`. Every child
started here or passed to `track` is known until it ends, so that an interrupted run can
end them all (`terminate_all`) and leave no orphan behind.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import display

_lock = threading.Lock()
_children: set[subprocess.Popen[Any]] = set()
#: Lines of a failed child's stderr shown.
TAIL = 20


def track(proc: subprocess.Popen[Any]) -> None:
    """Count ``proc`` among the children `terminate_all` ends."""
    with _lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen[Any]) -> None:
    with _lock:
        _children.discard(proc)


def run_captured(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout)`, tracked.

    ``argv[1]`` names the child when its output is shown (it failed: exit status > 0).

    Raises:
        subprocess.TimeoutExpired: the child overran ``timeout`` (it has been killed).
    """
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        track(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            untrack(proc)
    if proc.returncode > 0:  # < 0: ended by a signal, as an interrupted run ends it
        show_failure(Path(argv[1]).name, proc.returncode, stderr)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def show_failure(name: str, status: int, stderr: str) -> None:
    """Show the last lines of a failed child's stderr (above a live display, if one is on)."""
    lines = stderr.strip().splitlines()[-TAIL:] or ["(no output)"]
    display.note("\n".join([f"{name} exited with status {status}:", *lines]))


def terminate_all(grace: float = 5.0) -> None:
    """Terminate every child still running (kill one that outlives ``grace``), and wait."""
    with _lock:
        children = list(_children)
    for proc in children:
        if proc.poll() is None:
            proc.terminate()
    for proc in children:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
