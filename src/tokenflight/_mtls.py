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
    from ._client_auth import ClientAuth, TLSIdentity

__all__ = ["ClientPool", "tls_context"]


def tls_context(identity: TLSIdentity) -> ssl.SSLContext:
    """An SSL context presenting a client certificate and verifying the server.

    Raises:
        ConfigurationError: The certificate, key or CA bundle cannot be loaded.
    """
    cert, key, ca = identity
    try:
        context = ssl.create_default_context(cafile=ca) if ca else httpx.create_ssl_context()
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS client certificate {cert!r} or its key/CA bundle: "
            f"{type(exc).__name__}"
        ) from None
    return context


class ClientPool:
    """One `httpx.AsyncClient` per client certificate, closed by `aclose()`."""

    def __init__(self, make: Callable[[ssl.SSLContext], httpx.AsyncClient]) -> None:
        self._make = make
        self._clients: dict[TLSIdentity, httpx.AsyncClient] = {}

    def client_for(self, auth: ClientAuth) -> httpx.AsyncClient | None:
        """The client for a method's certificate; None when it presents none."""
        identity = auth.tls
        if identity is None:
            return None
        client = self._clients.get(identity)
        if client is None:
            client = self._clients[identity] = self._make(tls_context(identity))
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
