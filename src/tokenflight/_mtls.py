"""Mutual TLS client authentication (RFC 8705): an httpx client per client certificate.

`tls_client_auth` (a certificate from a CA the server trusts, matched by subject) and
`self_signed_tls_client_auth` (a certificate registered with the server) both prove the
client in the TLS handshake, so the form carries only `client_id`. A TLS connection is
bound to one certificate: the manager keeps one pooled `httpx.AsyncClient` per
(certificate, key, CA bundle), made on first use and closed with the manager.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._config import ClientCredentials

__all__ = ["TLS_METHODS", "ClientPool", "tls_context"]

TLS_METHODS = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})

_PoolKey = tuple[str, str | None, str | None]


def tls_context(creds: ClientCredentials) -> ssl.SSLContext:
    """An SSL context presenting the client's certificate and verifying the server.

    Raises:
        ConfigurationError: The certificate, key or CA bundle cannot be loaded.
    """
    assert creds.client_cert is not None
    try:
        if creds.tls_ca_bundle is not None:
            context = ssl.create_default_context(cafile=creds.tls_ca_bundle)
        else:
            context = httpx.create_ssl_context()
        context.load_cert_chain(creds.client_cert, creds.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"client {creds.client_id!r}: cannot load the TLS client certificate "
            f"{creds.client_cert!r} or its key/CA bundle: {type(exc).__name__}"
        ) from None
    return context


class ClientPool:
    """One `httpx.AsyncClient` per client certificate, closed by `aclose()`."""

    def __init__(self, make: Callable[[ssl.SSLContext], httpx.AsyncClient]) -> None:
        self._make = make
        self._clients: dict[_PoolKey, httpx.AsyncClient] = {}

    def client_for(self, creds: ClientCredentials) -> httpx.AsyncClient | None:
        """The client for the credentials' certificate; None when they have none."""
        if creds.client_cert is None:
            return None
        key = (creds.client_cert, creds.client_key, creds.tls_ca_bundle)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._make(tls_context(creds))
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
