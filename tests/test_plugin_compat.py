"""tokenflight's pytest plugin: its fixtures under anyio's plugin and pytest-asyncio (strict
and auto), every provider profile, and nothing heavy imported until a fixture is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import user_pytest
from tokenflight.testing import PROFILE_NAMES

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
    result = user_pytest(PROJECT, *PLUGINS[mode], USER_MODE=mode)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    profiles = len(PROFILE_NAMES)  # one async and one sync test per provider profile
    async_tests = 3 + profiles
    # anyio runs each async test on asyncio and trio
    expected = (2 if mode == "anyio" else 1) * async_tests + profiles
    assert f"{expected} passed" in result.stdout, result.stdout[-2000:]


# Written into an empty project: records what the session imported, at its very end.
SPY_CONFTEST = """
import json, os, sys

def pytest_sessionfinish(session):
    heavy = ("tokenflight", "httpx", "httpx2", "tenacity", "h11")
    report = {
        "plugin": session.config.pluginmanager.has_plugin("tokenflight"),
        "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
    }
    with open(os.environ["SPY_REPORT"], "w") as f:
        json.dump(report, f)
"""


@pytest.mark.parametrize("plugin", ["anyio", "pytest-asyncio"])
def test_plugin_imports_nothing_heavy_into_a_session(tmp_path, plugin):
    """A pytest session with the plugin loaded never imports tokenflight, httpx or tenacity."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "conftest.py").write_text(SPY_CONFTEST, encoding="utf-8")
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    pass\n", encoding="utf-8")
    report = tmp_path / "report.json"
    flags = ["-p", "no:asyncio"] if plugin == "anyio" else ["-p", "asyncio"]
    result = user_pytest(tmp_path, *flags, SPY_REPORT=str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    seen = json.loads(report.read_text(encoding="utf-8"))
    assert seen == {"plugin": True, "heavy": []}
