"""The README's runnable examples run as written."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


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
    return text.split(f"<!-- --8<-- [start:{name}] -->")[1].split(f"<!-- --8<-- [end:{name}] -->")[0]


def test_provider_and_authentication_recipes_run_in_the_new_form() -> None:
    """The provider recipes and client-authentication examples build their credentials as
    pasted, in order, with no deprecated keyword (a DeprecationWarning is an error here)."""
    for name in ("providers", "auth"):
        namespace: dict[str, object] = {"__name__": "readme_recipe"}
        blocks = re.findall(r"```python\n(.*?)```", _section(name), re.S)
        assert blocks
        for block in blocks:
            assert "client_secret=" not in block and "auth_method=" not in block
            exec(compile(block, str(README), "exec"), namespace)
