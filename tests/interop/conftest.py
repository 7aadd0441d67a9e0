"""Independent authorization servers on 127.0.0.1, started once per test session.

- panva's oidc-provider (Node): `npm ci` in this directory installs it (`.ci/run` does);
  without node or node_modules its tests are skipped with the reason, or fail when the
  `CI` environment variable is set.
- Authlib's authorization server (Python, the `test` extra), in a thread.

Both get the same client registrations (`REGISTRATIONS`), one token endpoint auth method
each, as a real registration has (RFC 7591 section 2).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from .authlib_server import Client, running_authlib_server

HERE = Path(__file__).parent

# Every printable ASCII character, space included: RFC 6749 appendix A.2 allows any
# VSCHAR (%x20-7E) in a client secret.
ALL_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# Characters that a Basic header encoder and decoder must agree on, and one that a server
# which percent-decodes twice would turn into something else.
TRICKY_SECRETS = {
    "printable": ALL_PRINTABLE,
    "spaces": "  a secret with spaces  ",
    "plus-percent-colon": "a+b%2Bc%20d:e%",
}
# Outside VSCHAR: oidc-provider refuses to register it (RFC 6749 appendix A.2), Authlib
# takes it.
NON_ASCII_SECRET = "pässwörd-ключ-🔑"
# HS256 needs 32 bytes of key (RFC 7518 section 3.2).
JWT_SECRET = "a-client-secret-jwt-key-of-48-bytes-or-so-012345"
RESOURCE = "https://api.example/"
OTHER_RESOURCE = "https://reports.example/"


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "httpx2"), id="asyncio-httpx2"),
        pytest.param(("trio", "httpx"), id="trio-httpx"),
    ]
)
def anyio_backend(request, monkeypatch):
    """Two of the five loop/stack combinations: the servers, not our stacks, are tested here."""
    backend, stack = request.param
    monkeypatch.setenv("TOKENFLIGHT_HTTP", stack)
    return backend


@dataclass(frozen=True)
class Keys:
    """The clients' key pairs (private JWKs with a `kid`), and one nobody registered."""

    rs256: dict[str, Any]
    ps256: dict[str, Any]
    es256: dict[str, Any]
    stranger: dict[str, Any]

    def by_alg(self, alg: str) -> dict[str, Any]:
        return {"RS256": self.rs256, "PS256": self.ps256, "ES256": self.es256}[alg]


def _public(jwk: Mapping[str, Any]) -> dict[str, Any]:
    key = (ECKey if jwk["kty"] == "EC" else RSAKey).import_key(dict(jwk))
    return {**key.as_dict(private=False), "kid": jwk["kid"]}


@pytest.fixture(scope="session")
def keys() -> Keys:
    """Fresh RSA and P-256 key pairs for this session."""

    def rsa(kid: str) -> dict[str, Any]:
        return {**RSAKey.generate_key(2048, private=True).as_dict(private=True), "kid": kid}

    es = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    return Keys(rs256=rsa("rs"), ps256=rsa("ps"), es256={**es, "kid": "es"}, stranger=rsa("rs"))


@dataclass(frozen=True)
class Registration:
    """One client as the servers know it."""

    client_id: str
    method: str
    secret: str | None = None
    alg: str | None = None  # for private_key_jwt: the key in `Keys`, and its algorithm
    oidc_provider: bool = True


def registrations() -> list[Registration]:
    """The clients both servers register (oidc-provider all but the non-ASCII one)."""
    basics = [
        Registration(client_id=f"basic-{name}", method="client_secret_basic", secret=secret)
        for name, secret in TRICKY_SECRETS.items()
    ]
    return [
        *basics,
        # Basic form-urlencodes the id too (RFC 6749 section 2.3.1).
        Registration(client_id="id: with+%", method="client_secret_basic", secret=ALL_PRINTABLE),
        Registration(
            client_id="basic-non-ascii",
            method="client_secret_basic",
            secret=NON_ASCII_SECRET,
            oidc_provider=False,
        ),
        Registration(client_id="post", method="client_secret_post", secret=ALL_PRINTABLE),
        Registration(client_id="secret-jwt", method="client_secret_jwt", secret=JWT_SECRET),
        *(
            Registration(client_id=f"key-{alg.lower()}", method="private_key_jwt", alg=alg)
            for alg in ("RS256", "PS256", "ES256")
        ),
        Registration(client_id="dpop", method="client_secret_basic", secret=JWT_SECRET),
        Registration(client_id="dpop-nonce", method="client_secret_basic", secret=JWT_SECRET),
    ]


@dataclass(frozen=True)
class Server:
    """A running independent authorization server."""

    name: str
    issuer: str
    token_url: str
    features: frozenset[str] = field(default_factory=frozenset)
    clients: frozenset[str] = field(default_factory=frozenset)

    def require(self, feature: str) -> None:
        """Skip this test when the server does not implement `feature`."""
        if feature not in self.features:
            pytest.skip(f"{self.name} does not implement {feature}")


def _need_node() -> str | None:
    """Why oidc-provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Node 20 or later runs oidc-provider)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider is not installed: run `npm ci` in {HERE}"
    return None


def _oidc_client(reg: Registration, keys: Keys) -> dict[str, Any]:
    client: dict[str, Any] = {
        "client_id": reg.client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "scope": "read write",
        "token_endpoint_auth_method": reg.method,
    }
    if reg.secret is not None:
        client["client_secret"] = reg.secret
    if reg.alg is not None:
        client["jwks"] = {"keys": [_public(keys.by_alg(reg.alg))]}
        client["token_endpoint_auth_signing_alg"] = reg.alg
    return client


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    return ""


@pytest.fixture(scope="session")
def oidc_provider(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """panva's oidc-provider in a Node subprocess on a free loopback port."""
    reason = _need_node()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure)", pytrace=False)
        pytest.skip(reason)
    regs = [r for r in registrations() if r.oidc_provider]
    config = tmp_path_factory.mktemp("oidc-provider") / "config.json"
    config.write_text(json.dumps({"clients": [_oidc_client(r, keys) for r in regs]}))
    proc = subprocess.Popen(
        ["node", str(HERE / "oidc_provider_server.mjs"), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        line = _read_line(proc, time.monotonic() + 30)
        if not line:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"oidc-provider did not start:\n{err}", pytrace=False)
        issuer = json.loads(line)["issuer"]
        _wait_until_it_answers(issuer + "/.well-known/openid-configuration")
        yield Server(
            name="oidc-provider",
            issuer=issuer,
            token_url=issuer + "/token",
            features=frozenset({"resource indicators", "DPoP"}),
            clients=frozenset(r.client_id for r in regs),
        )
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _wait_until_it_answers(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            status = httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            status = None
        if status == 200:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"oidc-provider never answered {url} (last: {status})", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="session")
def authlib_server(keys: Keys) -> Iterator[Server]:
    """Authlib's authorization server in a thread on a free loopback port."""
    with running_authlib_server() as state:
        for reg in registrations():
            jwks = None if reg.alg is None else {"keys": [_public(keys.by_alg(reg.alg))]}
            state.add_client(
                Client(
                    client_id=reg.client_id, auth_method=reg.method, secret=reg.secret, jwks=jwks
                )
            )
        yield Server(
            name="Authlib",
            issuer=state.issuer,
            token_url=state.token_url,
            clients=frozenset(state.clients),
        )


@pytest.fixture(params=["oidc-provider", "Authlib"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each independent server in turn."""
    name = "oidc_provider" if request.param == "oidc-provider" else "authlib_server"
    result: Server = request.getfixturevalue(name)
    return result
