"""The `tokenflight` command line, called as `main(argv, out=...)` (plain sync tests)."""

from __future__ import annotations

import json
import logging
import re
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from io import StringIO
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from helpers import closed_port_url
from tokenflight._cli import BENCH_MODULES, _importable, main
from tokenflight.testing import IdentityProvider

SECRET = "cli-s3cret:+% wörd"
SECRET_ENV = "TOKENFLIGHT_TEST_SECRET"


# Not the shipped tokenflight_idp: one per module for these many CLI runs, and client "acme"
# with the SECRET the config files name.
@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    """The bundled IdP served by its own event loop in a background thread."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(IdentityProvider()) as server,
    ):
        portal.call(server.add_client, "acme", SECRET)
        yield server


def write_config(tmp_path: Path, token_url: str, **extra: str) -> Path:
    lines = ["[tenants.acme]", f'token_url = "{token_url}"', 'client_id = "acme"']
    lines += [f'{key} = "{value}"' for key, value in extra.items()]
    path = tmp_path / "tenants.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(*argv: str) -> tuple[int, str]:
    out = StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_token_prints_the_access_token(idp, tmp_path, monkeypatch):
    """`token TENANT --config` prints the token, with the secret read from the named variable."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)
    before = idp.token_requests
    code, out = run("token", "acme", "--config", str(config))
    assert code == 0
    token = out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_\-]{20,}", token)
    assert idp.token_requests == before + 1
    assert idp.requests[-1].auth_method == "client_secret_basic"


def test_token_json(idp, tmp_path, monkeypatch):
    """`--json` prints access_token, token_type and expires_in as JSON."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)
    code, out = run("token", "acme", "--config", str(config), "--json")
    assert code == 0
    body = json.loads(out)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["access_token"], str)
    assert body["access_token"]


def test_missing_variable_exits_2(idp, tmp_path, monkeypatch, capsys):
    """An unset client_secret_env variable exits 2 with a message naming the variable."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    config = write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)
    code, out = run("token", "acme", "--config", str(config))
    assert code == 2
    assert out == ""
    assert SECRET_ENV in capsys.readouterr().err


def test_unknown_tenant_exits_2(idp, tmp_path, monkeypatch, capsys):
    """An unknown tenant exits 2 and says which tenants the file knows."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)
    code, _ = run("token", "nobody", "--config", str(config))
    assert code == 2
    err = capsys.readouterr().err
    assert "nobody" in err
    assert "acme" in err


def test_refused_credentials_exit_3(idp, tmp_path, monkeypatch, capsys):
    """Credentials the IdP refuses exit 3; the wrong secret appears nowhere in the output."""
    wrong = "wrong-s3cret-value"
    monkeypatch.setenv(SECRET_ENV, wrong)
    config = write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)
    code, out = run("token", "acme", "--config", str(config))
    assert code == 3
    captured = capsys.readouterr()
    assert "invalid_client" in captured.err
    for text in (out, captured.out, captured.err):
        assert wrong not in text


def test_unreachable_idp_exits_4(tmp_path, monkeypatch, capsys, no_retry_wait):
    """A token URL nobody listens on exits 4 without showing the secret."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = write_config(tmp_path, closed_port_url(), client_secret_env=SECRET_ENV)
    code, out = run("token", "acme", "--config", str(config))
    assert code == 4
    captured = capsys.readouterr()
    assert "unreachable" in captured.err
    for text in (out, captured.out, captured.err):
        assert SECRET not in text


def test_inline_secret_works_with_a_warning(idp, tmp_path, caplog):
    """An inline client_secret works, with a warning that does not repeat the secret."""
    config = write_config(tmp_path, idp.token_url, client_secret=SECRET)
    with caplog.at_level(logging.WARNING, logger="tokenflight"):
        code, out = run("token", "acme", "--config", str(config))
    assert code == 0
    assert out.strip()
    warnings = [r for r in caplog.records if "inline" in r.getMessage()]
    assert warnings
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_demo_summary(capsys):
    """The demo makes no 401 and exactly the minimum possible number of token requests."""
    code, out = run(
        "demo", "--duration", "3", "--workers", "20", "--tenants", "4", "--lifetime", "2"
    )
    assert code == 0
    assert re.search(r"^\s*401 responses\s+0$", out, re.MULTILINE)
    match = re.search(r"token requests \(IdP\)\s+(\d+) \(minimum possible (\d+)", out)
    assert match, out
    # One token per tenant per usable lifetime; a loaded machine may refresh some early
    # (ahead of how long its requests take), never stampede.
    assert int(match.group(2)) == 8
    assert 8 <= int(match.group(1)) <= 12
    assert re.search(r"^\s*errors\s+0$", out, re.MULTILINE)


@pytest.mark.parametrize("spec", ["S3CR3T-no-colon", ":S3CR3T-no-id", "acme:"])
def test_idp_client_errors_never_print_the_secret(spec, capsys):
    """A malformed `idp --client` exits 2 without echoing the argument's secret."""
    assert main(["idp", "--client", spec], out=StringIO()) == 2
    captured = capsys.readouterr()
    assert "ID:SECRET" in captured.err
    assert "S3CR3T" not in captured.out + captured.err
    if spec == "acme:":
        assert "'acme'" in captured.err  # the client id, alone, helps find the mistake


@pytest.mark.parametrize(
    "url", ["htps://user:S3CR3T-pw@idp.example/token", "ftp://user:S3CR3T-pw@idp.example/t"]
)
def test_token_url_password_is_not_printed(url, tmp_path, monkeypatch, capsys):
    """A token_url with a password in it is reported without the password."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = write_config(tmp_path, url, client_secret_env=SECRET_ENV)
    code, out = run("token", "acme", "--config", str(config))
    captured = capsys.readouterr()
    assert code == 2
    assert "S3CR3T" not in out + captured.out + captured.err
    assert "user:***@idp.example" in captured.err


# -- one line for every bad input, with a documented exit status ----------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--tenants", "0"],
        ["demo", "--workers", "0"],
        ["demo", "--lifetime", "-1"],
        ["idp", "--profile", "nope"],
        ["idp", "--lifetime", "-5"],
        ["idp", "--latency", "nan"],
    ],
)
def test_bad_options_are_one_line_usage_errors(argv, capsys):
    """Each bad option exits 2 with argparse's one-line reason, no traceback."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[tenants]\nacme = "oops"\n', "must be a [tenants.acme] table"),
        ('[tenants.acme]\ntoken_url = "https://idp.example/t"\n', "set client_id"),
        ('[tenants.acme]\nclient_id = "a"\n', "set token_url"),
    ],
)
def test_bad_tenant_tables_are_one_line_errors(table, message, tmp_path, capsys):
    """A tenant that is not a table, or lacks client_id or token_url, exits 2 with one line."""
    path = tmp_path / "tenants.toml"
    path.write_text(table, encoding="utf-8")
    code, _ = run("token", "acme", "--config", str(path))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_version_and_bare_command(capsys):
    """`--version` prints the version; bare `tokenflight` prints help and exits 0."""
    from tokenflight import __version__

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"tokenflight {__version__}"
    code, out = run()
    assert code == 0
    assert "usage: tokenflight" in out
    assert "Exit status" in out


def test_secret_from_the_environment_loses_its_newline(idp, tmp_path, monkeypatch):
    """A secret set with a trailing newline (echo > file; export X=$(cat) …) still works."""
    monkeypatch.setenv(SECRET_ENV, SECRET + "\n")
    code, out = run(
        "token",
        "acme",
        "--config",
        str(write_config(tmp_path, idp.token_url, client_secret_env=SECRET_ENV)),
    )
    assert code == 0
    assert out.strip()


def test_empty_variable_is_called_empty(tmp_path, monkeypatch, capsys):
    """An empty client_secret_env variable is reported as empty, not as unset."""
    monkeypatch.setenv(SECRET_ENV, "")
    path = write_config(tmp_path, "https://idp.example/t", client_secret_env=SECRET_ENV)
    code, _ = run("token", "acme", "--config", str(path))
    assert code == 2
    assert "is empty" in capsys.readouterr().err


def test_token_failure_is_printed_once(tmp_path, monkeypatch, capsys, no_retry_wait):
    """A failed token request prints one error line, not a log warning and then the error."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = write_config(tmp_path, closed_port_url(), client_secret_env=SECRET_ENV)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()  # let main() configure logging as a fresh process
    try:
        code, _ = run("token", "acme", "--config", str(path))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)  # not `root.level =`: setLevel also clears the loggers' caches
    err = capsys.readouterr().err
    assert code == 4
    assert len(err.strip().splitlines()) == 1


def test_bench_outside_a_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    """`tokenflight bench` outside a source checkout exits 2 saying where to run it."""
    monkeypatch.chdir(tmp_path)
    code, _ = run("bench", "--", "--quick")
    assert code == 2
    assert "source checkout" in capsys.readouterr().err


def test_a_wrongly_typed_setting_is_one_line(tmp_path, monkeypatch, capsys):
    """`scopes = 5`, a setting of the wrong type, exits 2 with one line naming the tenant."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = write_config(tmp_path, "https://idp.example/t", client_secret_env=SECRET_ENV)
    path.write_text(path.read_text(encoding="utf-8") + "scopes = 5\n", encoding="utf-8")
    code, _ = run("token", "acme", "--config", str(path))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: tenant 'acme'")
    assert len(err.strip().splitlines()) == 1
    assert SECRET not in err


def test_idp_port_in_use_names_the_port(capsys):
    """A taken `idp --port` is named in the one error line, with a hint to use --port."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _ = run("idp", "--port", str(port))
    err = capsys.readouterr().err
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "--port" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def idp_clients(*argv: str) -> dict[str, str]:
    """The clients `tokenflight idp` with `argv` would register."""
    from tokenflight._cli import _idp_clients, _parser

    return dict(_idp_clients(_parser().parse_args(["idp", *argv])))


def test_idp_secrets_from_the_environment_and_a_file(tmp_path, monkeypatch, capsys):
    """`--client-env ID=VAR` and `--clients-file` give secrets without argv, and no warning."""
    monkeypatch.setenv(SECRET_ENV, SECRET + "\n")
    clients = tmp_path / "clients"
    clients.write_text("# id:secret\nbeta:beta-secret\n\ngamma:g:with-colon\n", encoding="utf-8")
    registered = idp_clients("--client-env", f"acme={SECRET_ENV}", "--clients-file", str(clients))
    assert registered == {"acme": SECRET, "beta": "beta-secret", "gamma": "g:with-colon"}
    assert "warning" not in capsys.readouterr().err


def test_idp_secret_on_argv_warns(capsys):
    """`--client ID:SECRET` still works, with a warning that `ps` shows the secret."""
    assert idp_clients("--client", "acme:S3CR3T") == {"acme": "S3CR3T"}
    err = capsys.readouterr().err
    assert "warning: --client puts secrets on the command line" in err
    assert "S3CR3T" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--client-env", "acme"], "write it as ID=VAR"),
        (["--client-env", "acme=TOKENFLIGHT_TEST_UNSET"], "TOKENFLIGHT_TEST_UNSET is not set"),
        (["--clients-file", "/nonexistent/clients"], "cannot read --clients-file"),
    ],
)
def test_idp_client_sources_fail_in_one_line(argv, message, monkeypatch, capsys):
    """A bad --client-env or --clients-file exits 2 with one line saying what is wrong."""
    monkeypatch.delenv("TOKENFLIGHT_TEST_UNSET", raising=False)
    assert main(["idp", *argv], out=StringIO()) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_idp_clients_file_line_errors_hide_the_secret(tmp_path, capsys):
    """A malformed --clients-file line is reported by number, never echoing its text."""
    clients = tmp_path / "clients"
    clients.write_text("acme:ok\nS3CR3T-no-colon\n", encoding="utf-8")
    assert main(["idp", "--clients-file", str(clients)], out=StringIO()) == 2
    err = capsys.readouterr().err
    assert "line 2" in err
    assert "S3CR3T" not in err


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A directory with a benchmarks/run.py, as the cwd; the runner records its arguments."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "run.py").write_text("raise SystemExit(9)\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    calls: list[list[str]] = []

    def runner(script, args):
        calls.append(args)
        return 0

    monkeypatch.setattr("tokenflight._cli._run_bench_script", runner)
    # The bench extra is not part of the test extra: stand-ins let the check pass.
    for name in BENCH_MODULES:
        if not _importable(name):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    return calls


@pytest.mark.parametrize(
    "argv", [["--", "--quick"], ["--quick"], ["--", "--quick", "--only", "B1,B3"]]
)
def test_bench_forwards_its_arguments(argv, checkout):
    """`bench -- --quick …` hands run.py exactly the arguments after `--`."""
    assert run("bench", *argv)[0] == 0
    assert checkout == [[a for a in argv if a != "--"]]


def test_bench_runs_the_script_with_its_exit_status(tmp_path, monkeypatch):
    """The real runner runs benchmarks/run.py as __main__ and returns its exit status."""
    from tokenflight._cli import _run_bench_script

    script = tmp_path / "run.py"
    script.write_text("import sys\nraise SystemExit(len(sys.argv))\n", encoding="utf-8")
    assert _run_bench_script(script, ["--quick", "--only", "B1"]) == 4


def test_bench_without_its_extra_is_one_line(checkout, monkeypatch, capsys):
    """Missing bench modules are named in one line that gives the pip command; nothing runs."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None: the import fails
    monkeypatch.setitem(sys.modules, "httpx_auth", None)
    code, _ = run("bench", "--", "--quick")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "error: the benchmarks need matplotlib, httpx_auth, not installed: "
        "pip install 'tokenflight[bench]'"
    )
    assert checkout == []


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("demo", ["(default: 500)", "(default: 50)", "(default: asyncio)"]),
        ("idp", ["(default: 8765)", "(default: generic)"]),
        ("bench", ["tokenflight[bench]", "-- --quick"]),
    ],
)
def test_help_shows_the_defaults(command, shown, capsys):
    """Each command's --help shows its options' defaults (and bench how to pass arguments)."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in shown:
        assert text in out


# -- demo progress and summary ---------------------------------------------------------


class Terminal(StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_demo_output_is_plain_when_not_a_terminal():
    """Not on a terminal, the demo prints plain lines: no carriage returns, no escapes."""
    code, out = run("demo", "--duration", "1", "--workers", "4", "--tenants", "2")
    assert code == 0
    assert "\r" not in out
    assert "\x1b" not in out
    assert re.search(r"^Summary$", out, re.MULTILINE), out
    assert re.search(r"^  calls made\s+[1-9]\d* \(", out, re.MULTILINE), out


def test_plain_progress_is_a_line_every_few_seconds():
    """Plain progress prints the fields as one line, then holds back until PLAIN_EVERY."""
    from tokenflight._live import live_progress

    out = StringIO()
    with live_progress(out) as progress:
        assert not progress.is_live
        progress.update([("elapsed", "1.0/20s"), ("calls/s", "512"), ("401s", "0")])
        progress.update([("elapsed", "2.0/20s"), ("calls/s", "498"), ("401s", "0")])
    assert out.getvalue() == "  elapsed 1.0/20s   calls/s 512   401s 0\n"


def test_on_a_terminal_progress_is_live_and_the_summary_a_table():
    """With rich on a terminal, progress is redrawn in place and the summary is a table."""
    from tokenflight._live import live_progress, print_summary

    out = Terminal()
    with live_progress(out) as progress:
        assert progress.is_live
        progress.update([("elapsed", "1.0/20s")])
    print_summary(out, "Summary", [("calls made", "12"), ("errors", "0")])
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: the live line is redrawn, then removed
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours and cursor moves away
    assert "│ calls made │ 12 │" in plain


def _interrupt_after_the_first_calls(
    action: Callable[[], object],
) -> Callable[..., Awaitable[None]]:
    """A stand-in for the demo's progress task: `action()` once some calls are made."""

    async def progress(settings, result, idp, started, display):
        while result.calls < 5:
            await anyio.sleep(0.01)
        action()
        await anyio.sleep_forever()

    return progress


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_prints_the_summary_so_far_and_exits_130(backend, monkeypatch):
    """Ctrl-C (SIGINT) during the demo prints the summary so far and exits 130."""
    import signal

    send = _interrupt_after_the_first_calls(lambda: signal.raise_signal(signal.SIGINT))
    monkeypatch.setattr("tokenflight._demo._progress", send)
    code, out = run("demo", "--duration", "600", "--workers", "4", "--tenants", "2",
                    "--backend", backend)  # fmt: skip
    assert code == 130
    assert re.search(r"^Summary \(interrupted after [\d.]+ of 600 s\)$", out, re.MULTILINE), out
    assert re.search(r"^  calls made\s+([5-9]|\d\d+) \(", out, re.MULTILINE), out


def test_a_cancelled_demo_prints_the_summary_so_far(monkeypatch):
    """Cancelling the demo's caller scope prints the summary of the calls made so far."""
    from tokenflight._demo import DemoSettings, run_demo

    out = StringIO()
    scopes: list[anyio.CancelScope] = []
    cancel = _interrupt_after_the_first_calls(lambda: scopes[0].cancel())
    monkeypatch.setattr("tokenflight._demo._progress", cancel)

    async def demo() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await run_demo(DemoSettings(workers=4, tenants=2, duration=600), out)

    anyio.run(demo)
    assert scopes[0].cancelled_caught
    assert "Summary (interrupted after" in out.getvalue()
