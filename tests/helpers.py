"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc
import httpx

from tokenflight import (
    ClientAuth,
    ClientCredentials,
    ClientSecretBasic,
    CooldownEntered,
    FetchFinished,
    FetchStarted,
    SlotEvicted,
    Token,
    TokenManager,
)
from tokenflight.testing import IdentityProvider


def creds(
    idp: IdentityProvider, client_id: str = "acme", auth: ClientAuth | None = None, **fields: Any
) -> ClientCredentials:
    """`client_id`'s credentials at `idp`: HTTP Basic with the secret the IdP registered,
    unless `auth` is given; `fields` are further `ClientCredentials` fields."""
    if auth is None:
        auth = ClientSecretBasic(idp.clients[client_id].secret)
    return ClientCredentials(token_url=idp.token_url, client_id=client_id, auth=auth, **fields)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until `predicate()` is true, checking every few milliseconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def gather_tokens(
    tokens: TokenManager, tenants: list[str], *, min_ttl: float = 0.0, timeout: float = 10.0
) -> list[Token]:
    """Call `get_token` for every tenant of the list at once (repeats allowed)."""
    results: list[Token] = []

    async def one(tenant: str) -> None:
        results.append(await tokens.get_token(tenant, min_ttl=min_ttl))

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            for tenant in tenants:
                tg.start_soon(one, tenant)
    return results


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A token URL on loopback where the connection is refused."""
    return f"http://127.0.0.1:{free_port()}/oauth/token"


def counting_transport(http_module: ModuleType = httpx) -> Any:
    """A real transport of `httpx` or `httpx2` that counts requests in flight (until the
    body is read) and their peak, in `in_flight` and `peak`."""

    class Counting(http_module.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            self._inner = http_module.AsyncHTTPTransport()
            self.in_flight = 0
            self.peak = 0

        async def handle_async_request(self, request: Any) -> Any:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                response = await self._inner.handle_async_request(request)
                await response.aread()
            finally:
                self.in_flight -= 1
            return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Counting()


CountingTransport = counting_transport


@asynccontextmanager
async def api_server(status_for: Callable[[str], int]) -> AsyncIterator[str]:
    """An API on 127.0.0.1 answering `status_for(bearer token)`; 401s carry invalid_token."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            token = ""
            for line in data.split(b"\r\n"):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "authorization":
                    token = value.strip().partition(" ")[2]
            status = status_for(token)
            head = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n"
            if status == 401:
                head += 'WWW-Authenticate: Bearer error="invalid_token"\r\n'
            await stream.send((head + "\r\n").encode())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def load_benchmark(name: str) -> ModuleType:
    """A module of benchmarks/ (outside the package), imported by path."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tokenflight_bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


Event = FetchStarted | FetchFinished | CooldownEntered | SlotEvicted


class Recorder:
    """Keeps every event it is told about, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def fetch_started(self, event: FetchStarted) -> None:
        self.events.append(event)

    def fetch_finished(self, event: FetchFinished) -> None:
        self.events.append(event)

    def cooldown_entered(self, event: CooldownEntered) -> None:
        self.events.append(event)

    def slot_evicted(self, event: SlotEvicted) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def self_signed_certificate(key: Any, name: str) -> bytes:
    """A self-signed certificate (PEM) for a `cryptography` private key, valid for a day."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def user_pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run pytest in a user's project, as the user would: none of our settings (stack,
    addopts), plus the environment variables given."""
    environ = {**os.environ, **env}
    environ.pop("TOKENFLIGHT_HTTP", None)
    environ.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
