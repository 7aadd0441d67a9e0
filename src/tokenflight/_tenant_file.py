"""Tenants in a TOML file (the command line's `--config`): every credential type.

```toml
[tenants.acme]
token_url = "https://idp.example/oauth/token"   # or issuer = "https://idp.example"
client_id = "acme"
client_secret_env = "ACME_SECRET"               # or client_secret_file = "/run/secrets/acme"
# auth_method = "client_secret_post"            # the method, when not the default
# private_key_file = "acme.pem"                 # private_key_jwt (PEM or a JWK in JSON)
# key_id, signing_alg, assertion_audience, assertion_lifetime, certificate_file
# client_cert = "acme.crt", client_key = "acme.key", ca_bundle = "ca.pem"   # mutual TLS
# scopes = ["read"], audience, resource, extra_params = {...}, dpop = true
```

Secrets and private keys come from the environment (`*_env`) or a file (`*_file`),
never from the command line; an inline `client_secret` works with a warning.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from ._client_auth import (
    AUTH_METHODS,
    SECRET_METHODS,
    ClientAuth,
    auth_for,
    implied_method,
)
from ._config import ClientCredentials
from ._errors import ConfigurationError

__all__ = ["load_tenant"]

logger = logging.getLogger("tokenflight")

# Setting name -> the TOML types it takes.
_PLAIN: dict[str, tuple[type, ...]] = {
    "token_url": (str,),
    "issuer": (str,),
    "client_id": (str,),
    "scopes": (list, str),
    "audience": (str,),
    "resource": (list, str),
    "extra_params": (dict,),
    "dpop": (bool,),
    "allow_insecure_http": (bool,),
}
_AUTH: dict[str, tuple[type, ...]] = {
    "auth_method": (str,),
    "client_secret": (str,),
    "client_secret_env": (str,),
    "client_secret_file": (str,),
    "private_key_env": (str,),
    "private_key_file": (str,),
    "key_id": (str,),
    "signing_alg": (str,),
    "assertion_audience": (str,),
    "assertion_lifetime": (int, float),
    "certificate_file": (str,),
    "client_cert": (str,),
    "client_key": (str,),
    "ca_bundle": (str,),
}
SETTINGS = frozenset(_PLAIN) | frozenset(_AUTH)
_FILES = frozenset(
    {"client_secret_file", "private_key_file", "certificate_file", "client_cert", "client_key"}
    | {"ca_bundle"}
)


def load_tenant(config: Path, tenant: str) -> ClientCredentials:
    """Read one tenant's credentials from a TOML file.

    Raises:
        ConfigurationError: The file, the tenant, a setting or a secret is missing or
            wrong; the message names it (and the likely spelling of a misspelt one).
    """
    table = _tenant_table(config, tenant)
    where = f"tenant {tenant!r} in {config}"
    _check_names(table, where)
    for name, value in table.items():
        kinds = _PLAIN.get(name) or _AUTH[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES[kind] for kind in kinds)
            raise ConfigurationError(f"{where}: {name} must be {expected}")
    if "client_id" not in table:
        raise ConfigurationError(f"{where}: set client_id")
    if "token_url" not in table and "issuer" not in table:
        raise ConfigurationError(f"{where}: set token_url (or issuer to discover it)")
    for name in _FILES & set(table):  # relative to the config file, not to the shell
        table[name] = str(config.parent / Path(table[name]).expanduser())
    settings = {name: value for name, value in table.items() if name in _PLAIN}
    return ClientCredentials(**settings, auth=_auth(table, where))


_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "a table",
    bool: "true or false",
    int: "a number",
    float: "a number",
}


def _tenant_table(config: Path, tenant: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {config}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
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
    return table


def _check_names(table: dict[str, Any], where: str) -> None:
    unknown = sorted(set(table) - SETTINGS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(SETTINGS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"{where}: unknown setting {unknown[0]!r}{hint}")


#: What a TOML tenant calls the secret, the key and the certificate.
_NAMES = {"secret": "client_secret_env", "key": "private_key_file", "cert": "client_cert"}


def _auth(table: dict[str, Any], where: str) -> ClientAuth:
    has_key = "private_key_file" in table or "private_key_env" in table
    method = table.get("auth_method") or implied_method(
        key=has_key,
        secret=any(name.startswith("client_secret") for name in table),
        cert="client_cert" in table,
        token_url="token_url" in table,
    )
    if method is None:  # nothing given: say which secret setting is missing
        method = "client_secret_basic" if "token_url" in table else "auto"
    if method not in AUTH_METHODS:
        close = difflib.get_close_matches(method, AUTH_METHODS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; use one of {list(AUTH_METHODS)}"
        raise ConfigurationError(f"{where}: auth_method {method!r} is unknown{hint}")
    # Secrets and keys are read only when the method needs them (or contradicts them).
    certificate = table.get("certificate_file")
    return auth_for(
        method,
        who=where,
        names=_NAMES,
        secret=_secret(table, where) if method in SECRET_METHODS else None,
        key=_private_key(table, where) if has_key or method == "private_key_jwt" else None,
        cert=table.get("client_cert"),
        key_id=table.get("key_id"),
        alg=table.get("signing_alg"),
        audience=table.get("assertion_audience"),
        lifetime=table.get("assertion_lifetime", 60.0),
        certificate=None if certificate is None else _read(certificate, where, "certificate_file"),
        cert_key=table.get("client_key"),
        ca=table.get("ca_bundle"),
    )


def _secret(table: dict[str, Any], where: str) -> str:
    if "client_secret_env" in table:
        return _from_env(table["client_secret_env"], where, "client_secret_env")
    if "client_secret_file" in table:
        return _read(table["client_secret_file"], where, "client_secret_file").rstrip("\r\n")
    inline = table.get("client_secret")
    if inline:
        logger.warning(
            "%s has client_secret inline in the config file; prefer client_secret_env", where
        )
        return str(inline)
    raise ConfigurationError(
        f"{where}: set client_secret_env (an environment variable's name) or client_secret_file"
    )


def _private_key(table: dict[str, Any], where: str) -> str | dict[str, Any]:
    if "private_key_env" in table:
        text = _from_env(table["private_key_env"], where, "private_key_env")
    elif "private_key_file" in table:
        text = _read(table["private_key_file"], where, "private_key_file")
    else:
        raise ConfigurationError(f"{where}: private_key_jwt needs private_key_file")
    if text.lstrip().startswith("{"):  # a JWK in JSON
        try:
            jwk = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: the private key is neither PEM nor JWK") from exc
        if isinstance(jwk, dict):
            return jwk
    return text


def _from_env(variable: str, where: str, setting: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise ConfigurationError(f"{where}: environment variable {variable} ({setting}) is not set")
    value = value.rstrip("\r\n")  # `export X=$(cat file)` keeps no newline; echo does
    if not value:
        raise ConfigurationError(f"{where}: environment variable {variable} ({setting}) is empty")
    return value


def _read(path: str, where: str, setting: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(1024 * 1024 + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{where}: cannot read {setting} {path!r}: {reason}") from None
    if len(text) > 1024 * 1024:
        raise ConfigurationError(f"{where}: {setting} {path!r} is over 1 MiB")
    if not text.strip():
        raise ConfigurationError(f"{where}: {setting} {path!r} is empty")
    return text
