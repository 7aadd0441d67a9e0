"""The README's runnable examples run as written."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest

from helpers import user_pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TESTING_GUIDE = ROOT / "docs" / "testing.md"

# A user's pytest.ini, as the README says (pytest-asyncio asks for its loop scope).
ANYIO_INI = "[pytest]\nfilterwarnings = error\n"
ASYNCIO_INI = ANYIO_INI + "asyncio_default_fixture_loop_scope = function\n"


def _runnable_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [
        block for block in blocks if "anyio.run(main)" in block or "SyncTokenManager()" in block
    ]


def _promised_output(block: str) -> list[str]:
    """The lines a block says it prints (`anyio.run(main)  # prints "a", "b"`); by default
    the token's type and lifetime, then the API's status and a count of one."""
    promise = re.search(r"^anyio\.run\(main\)\s+# prints (.*)$", block, re.M)
    return re.findall(r'"([^"]*)"', promise[1]) if promise else ["Bearer 3600", "200 1"]


def test_readme_has_a_runnable_example() -> None:
    """The README keeps at least one complete example that a reader can paste and run."""
    assert _runnable_blocks()


def test_rotation_and_opentelemetry_examples_are_runnable() -> None:
    """The credential-rotation and OpenTelemetry examples are among the blocks that run."""
    blocks = _runnable_blocks()
    assert any("resolver=load_credentials" in block for block in blocks)
    assert any("OpenTelemetryInstrumentation(" in block for block in blocks)


def test_readme_examples_run() -> None:
    """Each complete README example runs against the bundled IdP and prints what it promises."""
    for block in _runnable_blocks():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
        assert out.getvalue().splitlines() == _promised_output(block), out.getvalue()


def test_every_readme_python_block_compiles() -> None:
    """No README Python block is a fragment that fails with SyntaxError when pasted."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        compile(textwrap.dedent(block), str(README), "exec")


def _section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(f"<!-- --8<-- [start:{name}] -->")[1].split(f"<!-- --8<-- [end:{name}] -->")[
        0
    ]


def test_provider_and_authentication_recipes_run_in_the_new_form() -> None:
    """The provider recipes and client-authentication examples build their credentials as
    pasted, in order, with no deprecated keyword (a DeprecationWarning is an error here)."""
    for name in ("providers", "auth"):
        namespace: dict[str, object] = {"__name__": "readme_recipe"}
        blocks = re.findall(r"```python\n(.*?)```", _section(name), re.S)
        assert blocks
        for block in blocks:
            assert "client_secret=" not in block
            assert "auth_method=" not in block
            exec(compile(block, str(README), "exec"), namespace)


def _example_test_files() -> dict[str, str]:
    """The README's complete test files: Python blocks that begin with `# test_NAME.py`."""
    blocks = re.findall(r"```python\n# (test_\w+\.py)\n(.*?)```", _readme(), re.S)
    return dict(blocks)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_has_a_test_file_for_each_plugin() -> None:
    """The README shows a complete test file for anyio's plugin and one for pytest-asyncio."""
    files = _example_test_files()
    assert set(files) == {"test_api_anyio.py", "test_api_asyncio.py"}
    assert "pytest.mark.anyio" in files["test_api_anyio.py"]
    assert "pytest.mark.asyncio" in files["test_api_asyncio.py"]
    for source in files.values():
        assert "inject(Fault(" in source
        assert "with set_testing(" in source


@pytest.mark.parametrize("name", ["test_api_anyio.py", "test_api_asyncio.py"])
def test_readme_example_tests_pass(name, tmp_path) -> None:
    """Each README test file passes under pytest, in a project of its own, as written."""
    source = _example_test_files()[name]
    anyio = name.endswith("anyio.py")
    (tmp_path / "pytest.ini").write_text(ANYIO_INI if anyio else ASYNCIO_INI, encoding="utf-8")
    (tmp_path / name).write_text(source, encoding="utf-8")
    plugin = ["-p", "no:asyncio"] if anyio else ["-p", "asyncio"]
    result = user_pytest(tmp_path, *plugin, name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tests = len(re.findall(r"^async def test_", source, re.M))
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed, result.stdout[-2000:]
    assert int(passed.group(1)) >= tests  # anyio's plugin may run each on trio as well
    assert "failed" not in result.stdout


def _guide_files() -> dict[str, str]:
    """The testing guide's files: blocks with a `title="NAME"`, in the order given."""
    text = TESTING_GUIDE.read_text(encoding="utf-8")
    return dict(re.findall(r'```\w+ title="([\w.]+)"\n(.*?)```', text, re.S))


def test_testing_guide_walks_from_install_to_a_passing_test(tmp_path) -> None:
    """docs/testing.md: its install line, files and pytest command give passing tests."""
    text = TESTING_GUIDE.read_text(encoding="utf-8")
    assert re.search(r"^pip install .*tokenflight", text, re.M)
    files = _guide_files()
    assert {"myapp.py", "pytest.ini", "test_myapp.py"} <= set(files)
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    command = re.search(r"```sh\n(pytest[^\n]*)\n```", text)
    assert command, "the guide ends with the pytest command to run"
    result = user_pytest(tmp_path, *command.group(1).split()[1:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    promised = re.search(r"pytest reports `(\d+ passed)`", text)
    assert promised, "the guide says what pytest reports"
    assert f"{promised.group(1)} in" in result.stdout, result.stdout[-2000:]
