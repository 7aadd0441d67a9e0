"""The `tokenflight` command line: demo, token, idp, bench.

Exit status: 0 success; 1 another token error; 2 a usage or configuration mistake (one
line says what to fix); 3 the identity provider refused; 4 it could not be reached;
130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from ._demo import DemoSettings, run_demo
from ._errors import (
    ConfigurationError,
    TokenEndpointUnavailable,
    TokenError,
    TokenRequestRefused,
)
from ._manager import TokenManager
from ._tenant_file import load_tenant

__all__ = ["main"]

logger = logging.getLogger("tokenflight")

#: What benchmarks/run.py imports beyond tokenflight's own dependencies (the bench extra).
BENCH_MODULES = ("matplotlib", "httpx2", "httpx_aiohttp", "authlib", "httpx_auth", "psutil")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .testing._model import PROFILE_NAMES

    parser = argparse.ArgumentParser(
        prog="tokenflight",
        description="OAuth 2.0 client-credentials tokens, shared and fresh.",
        epilog="Exit status: 0 ok, 1 token error, 2 usage or configuration, 3 refused by the "
        "identity provider, 4 identity provider unreachable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"tokenflight {__version__}")
    sub = parser.add_subparsers(dest="command")
    shown = argparse.ArgumentDefaultsHelpFormatter

    demo = sub.add_parser(
        "demo",
        help="run many workers against the bundled identity provider",
        formatter_class=shown,
    )
    demo.add_argument("--workers", type=_positive_int, default=500, help="concurrent workers")
    demo.add_argument("--tenants", type=_positive_int, default=50, help="tenants they call for")
    demo.add_argument("--lifetime", type=_positive_float, default=5.0, help="token lifetime, s")
    demo.add_argument("--duration", type=_positive_float, default=20.0, help="seconds to run")
    demo.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop"
    )

    token = sub.add_parser(
        "token", help="fetch a token for a tenant of a TOML config file", formatter_class=shown
    )
    token.add_argument("tenant", help="a [tenants.NAME] table of the config file")
    token.add_argument("--config", required=True, type=Path, help="the tenants TOML file")
    token.add_argument("--json", action="store_true", help="print the whole token response")

    idp = sub.add_parser(
        "idp", help="serve the bundled identity provider for development", formatter_class=shown
    )
    idp.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1")
    idp.add_argument("--profile", choices=PROFILE_NAMES, default="generic", help="provider")
    idp.add_argument(
        "--lifetime", type=_positive_float, default=None, help="token lifetime, seconds"
    )
    idp.add_argument("--latency", type=_seconds, default=0.0, help="delay per token request, s")
    idp.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="a client to accept (repeatable; the secret shows in `ps`: prefer --client-env "
        "or --clients-file); default demo-client:demo-secret when no client is given",
    )
    idp.add_argument(
        "--client-env",
        action="append",
        default=[],
        metavar="ID=VAR",
        help="a client whose secret is in environment variable VAR (repeatable)",
    )
    idp.add_argument(
        "--clients-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="a file of clients, one ID:SECRET a line (# starts a comment)",
    )
    idp.add_argument(
        "--admin",
        action="store_true",
        help="serve the unauthenticated control endpoints under /_admin/ (benchmarks, tests)",
    )

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks (from a source checkout)",
        description="Run benchmarks/run.py of a source checkout; arguments after `--` go to "
        "it (`tokenflight bench -- --quick --only B1`). Needs the bench extra: "
        "pip install 'tokenflight[bench]'.",
        formatter_class=shown,
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to benchmarks/run.py")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if argv[:1] == ["bench"] and argv[1:] not in (["-h"], ["--help"]):
        # Everything after `bench` (after `--`, or not) is run.py's: argparse would take
        # `bench --quick` as an option of its own.
        return _outcome(lambda: _bench(argv[1:]))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return 0
    # A failed token request is reported once, as the command's own error line.
    level = logging.ERROR if args.command == "token" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return _outcome(lambda: _dispatch(args, out))


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "demo":
        settings = DemoSettings(
            workers=args.workers,
            tenants=args.tenants,
            lifetime=args.lifetime,
            duration=args.duration,
        )
        anyio.run(run_demo, settings, out, backend=args.backend)
    elif args.command == "token":
        return anyio.run(_token_command, args.tenant, args.config, args.json, out)
    elif args.command == "idp":
        anyio.run(_serve_idp, args, out)
    return 0


def _outcome(command: Callable[[], int]) -> int:
    """Run ``command``; its status, or each failure as one line and its exit status."""
    try:
        return command()
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:  # Ctrl-C on trio arrives in a task group
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        return 130
    except TokenRequestRefused as exc:
        print(f"error: the identity provider refused: {exc}", file=sys.stderr)
        return 3
    except TokenEndpointUnavailable as exc:
        print(f"error: the identity provider is unreachable: {exc}", file=sys.stderr)
        return 4
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 2


async def _token_command(tenant: str, config: Path, as_json: bool, out: TextIO) -> int:
    credentials = load_tenant(config, tenant)
    async with TokenManager() as tokens:
        tokens.register(tenant, credentials)
        token = await tokens.get_token(tenant)
    if as_json:
        body: dict[str, Any] = {
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
        }
        if token.scope is not None:
            body["scope"] = " ".join(token.scope)
        body.update(token.extra)
        print(json.dumps(body, indent=2), file=out)
    else:
        print(token.access_token, file=out)
    return 0


async def _serve_idp(args: argparse.Namespace, out: TextIO) -> None:
    from .testing import IdentityProvider

    idp = IdentityProvider(
        profile=args.profile,
        token_lifetime=args.lifetime,
        latency=args.latency,
        port=args.port,
        admin=args.admin,
    )
    for client_id, secret in _idp_clients(args):
        idp.add_client(client_id, secret)
    try:
        async with anyio.create_task_group() as tg:
            url = await tg.start(idp.serve_forever)
            print(f"tokenflight IdP ({args.profile}) listening on {url}", file=out, flush=True)
            print(f"  token endpoint: {idp.token_url}", file=out, flush=True)
            print(f"  protected resource: {idp.resource_url}", file=out, flush=True)
    except BaseExceptionGroup as group:  # the server task's own error, such as a taken port
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], OSError):
            raise _port_error(args.port, group.exceptions[0]) from None
        raise
    except OSError as exc:
        raise _port_error(args.port, exc) from None


def _port_error(port: int, exc: OSError) -> ConfigurationError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigurationError(
            f"port {port} on 127.0.0.1 is already in use: choose another with --port"
        )
    return ConfigurationError(
        f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}): choose another with --port"
    )


def _idp_clients(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The clients `idp` accepts, from --client, --client-env and --clients-file."""
    clients = [_client_spec(spec, "--client") for spec in args.client]
    if clients:
        print(
            "warning: --client puts secrets on the command line, where `ps` shows them to "
            "other users; prefer --client-env ID=VAR or --clients-file FILE",
            file=sys.stderr,
        )
    for spec in args.client_env:
        client_id, sep, variable = spec.partition("=")
        if not sep or not client_id or not variable:
            raise ConfigurationError(f"--client-env {spec!r}: write it as ID=VAR")
        secret = os.environ.get(variable, "").rstrip("\r\n")
        if not secret:
            state = "is empty" if variable in os.environ else "is not set"
            raise ConfigurationError(
                f"--client-env {spec}: environment variable {variable} {state}"
            )
        clients.append((client_id, secret))
    if args.clients_file is not None:
        clients += _clients_file(args.clients_file)
    return clients or [("demo-client", "demo-secret")]


def _client_spec(spec: str, where: str) -> tuple[str, str]:
    client_id, sep, secret = spec.partition(":")
    if not sep or not client_id or not secret:
        # Without a colon the whole text may be the secret: quote nothing of it.
        shown = f" for client {client_id!r}" if sep and client_id else ""
        raise ConfigurationError(
            f"{where}{shown}: write it as ID:SECRET (a client id, a colon, the secret)"
        )
    return client_id, secret


def _clients_file(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigurationError(f"cannot read --clients-file {path}: {reason}") from None
    clients = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            clients.append(_client_spec(line, f"--clients-file {path}, line {number}"))
    return clients


def _bench(args: Sequence[str]) -> int:
    script = Path.cwd() / "benchmarks" / "run.py"
    if not script.is_file():
        raise ConfigurationError(
            "tokenflight bench runs benchmarks/run.py from a source checkout: "
            "run it in the repository's top directory"
        )
    if args[:1] == ["--"]:  # `tokenflight bench -- --quick`
        args = args[1:]
    missing = [name for name in BENCH_MODULES if not _importable(name)]
    if missing:
        raise ConfigurationError(
            f"the benchmarks need {', '.join(missing)}, not installed: "
            "pip install 'tokenflight[bench]'"
        )
    return _run_bench_script(script, list(args))


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _run_bench_script(script: Path, args: list[str]) -> int:
    """Run ``script`` as ``__main__`` with ``args``; its exit status."""
    saved = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:  # the script's own `sys.exit(main())`
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0
