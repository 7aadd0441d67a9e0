"""tokenflight's pytest fixtures under anyio's plugin and pytest-asyncio (strict and auto)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "user_project"

LOOP_SCOPE = ["-o", "asyncio_default_fixture_loop_scope=function"]
PLUGINS = {
    "anyio": ["-p", "no:asyncio"],
    "strict": ["-p", "asyncio", "-o", "asyncio_mode=strict", *LOOP_SCOPE],
    "auto": ["-p", "asyncio", "-o", "asyncio_mode=auto", *LOOP_SCOPE],
}


@pytest.mark.parametrize("mode", list(PLUGINS))
def test_user_project_passes_under_each_async_plugin(mode):
    """A user's tests of tokenflight pass, setup to teardown, under each async plugin."""
    env = {**os.environ, "USER_MODE": mode}
    env.pop("TOKENFLIGHT_HTTP", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGINS[mode]],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    expected = 9 if mode == "anyio" else 5  # anyio runs each async test on asyncio and trio
    assert f"{expected} passed" in result.stdout, result.stdout[-2000:]
