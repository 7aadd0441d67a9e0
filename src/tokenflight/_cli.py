"""The `tokenflight` command line: demo, token, idp, bench.

Exit status: 0 success; 1 another token error; 2 a usage or configuration mistake (one
line says what to fix); 3 the identity provider refused; 4 it could not be reached;
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from ._config import ClientCredentials
from ._demo import DemoSettings, run_demo
from ._errors import (
    ConfigurationError,
    TokenEndpointUnavailable,
    TokenError,
    TokenRequestRefused,
)
from ._manager import TokenManager

__all__ = ["main"]

logger = logging.getLogger("tokenflight")

CREDENTIAL_FIELDS = frozenset(
    {
        "token_url",
        "issuer",
        "client_id",
        "auth_method",
        "scopes",
        "audience",
        "resource",
        "extra_params",
    }
)


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
        help="a client to accept (repeatable); default demo-client:demo-secret",
    )
    idp.add_argument(
        "--admin",
        action="store_true",
        help="serve the unauthenticated control endpoints under /_admin/ (benchmarks, tests)",
    )

    bench = sub.add_parser("bench", help="run the benchmarks (from a source checkout)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to benchmarks/run.py")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return 0
    # A failed token request is reported once, as the command's own error line.
    level = logging.ERROR if args.command == "token" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
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
        else:
            return _bench(args.args)
    except KeyboardInterrupt:
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
    except OSError as exc:  # the idp's port is taken, and such
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def load_tenant(config: Path, tenant: str) -> ClientCredentials:
    """Read one tenant's credentials from a TOML file; secrets come from the environment.

    The file holds `[tenants.NAME]` tables with `token_url`, `client_id`,
    `client_secret_env` (the name of the environment variable holding the secret),
    and optionally `auth_method`, `scopes`, `audience`, `resource`, `extra_params`.

    Raises:
        ConfigurationError: The file, the tenant or the variable is missing or wrong.
    """
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {config}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {config} is not valid TOML: {exc}") from exc
    tenants = data.get("tenants")
    if not isinstance(tenants, dict) or tenant not in tenants:
        known = ", ".join(sorted(tenants)) if isinstance(tenants, dict) else "none"
        raise ConfigurationError(f"unknown tenant {tenant!r} in {config} (known: {known})")
    table = tenants[tenant]
    if not isinstance(table, dict):
        raise ConfigurationError(
            f"tenant {tenant!r} in {config} must be a [tenants.{tenant}] table"
        )
    missing = {"client_id"} - set(table)
    if "token_url" not in table and "issuer" not in table:
        missing.add("token_url")
    if missing:
        raise ConfigurationError(f"tenant {tenant!r} in {config}: set {', '.join(sorted(missing))}")
    unknown = set(table) - CREDENTIAL_FIELDS - {"client_secret", "client_secret_env"}
    if unknown:
        raise ConfigurationError(f"tenant {tenant!r}: unknown settings {sorted(unknown)}")
    settings = {k: v for k, v in table.items() if k in CREDENTIAL_FIELDS}
    if "scopes" in settings and isinstance(settings["scopes"], list):
        settings["scopes"] = tuple(settings["scopes"])
    return ClientCredentials(client_secret=_secret(table, tenant), **settings)


def _secret(table: dict[str, Any], tenant: str) -> str:
    variable = table.get("client_secret_env")
    if variable is not None:
        value = os.environ.get(str(variable))
        if value is None:
            raise ConfigurationError(
                f"tenant {tenant!r}: environment variable {variable} (client_secret_env) is not set"
            )
        value = value.rstrip("\r\n")  # `export X=$(cat file)` keeps no newline; echo does
        if not value:
            raise ConfigurationError(
                f"tenant {tenant!r}: environment variable {variable} (client_secret_env) is empty"
            )
        return value
    inline = table.get("client_secret")
    if isinstance(inline, str) and inline:
        logger.warning(
            "tenant %r has client_secret inline in the config file; prefer client_secret_env",
            tenant,
        )
        return inline
    raise ConfigurationError(f"tenant {tenant!r}: set client_secret_env to a variable's name")


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
    for spec in args.client or ["demo-client:demo-secret"]:
        client_id, sep, secret = spec.partition(":")
        if not sep or not client_id or not secret:
            # Without a colon the whole argument may be the secret: quote nothing of it.
            shown = f" for client {client_id!r}" if sep and client_id else ""
            raise ConfigurationError(
                f"--client{shown}: write it as ID:SECRET (a client id, a colon, the secret)"
            )
        idp.add_client(client_id, secret)
    try:
        async with anyio.create_task_group() as tg:
            url = await tg.start(idp.serve_forever)
            print(f"tokenflight IdP ({args.profile}) listening on {url}", file=out, flush=True)
            print(f"  token endpoint: {idp.token_url}", file=out, flush=True)
            print(f"  protected resource: {idp.resource_url}", file=out, flush=True)
    except BaseExceptionGroup as group:  # the server task's own error, such as a taken port
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], OSError):
            raise group.exceptions[0] from None
        raise


def _bench(args: Sequence[str]) -> int:
    script = Path.cwd() / "benchmarks" / "run.py"
    if not script.is_file():
        raise ConfigurationError(
            "tokenflight bench runs benchmarks/run.py from a source checkout: "
            "run it in the repository's top directory"
        )
    if args[:1] == ["--"]:  # `tokenflight bench -- --quick`
        args = args[1:]
    for module in ("authlib", "httpx_auth", "psutil"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigurationError(
                f"the benchmarks need {module}: pip install 'tokenflight[bench]'"
            ) from None
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")
    return 0
