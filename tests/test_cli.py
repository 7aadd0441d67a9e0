"""The `tokenflight` command line, called as `main(argv, out=...)` (plain sync tests)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from helpers import closed_port_url
from tokenflight._cli import main
from tokenflight.testing import IdentityProvider

SECRET = "cli-s3cret:+% wörd"
SECRET_ENV = "TOKENFLIGHT_TEST_SECRET"


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
