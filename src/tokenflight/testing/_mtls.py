"""Mutual-TLS client authentication (RFC 8705) at the bundled IdP.

Serve with ``IdentityProvider(tls=server_context)``: a context that asks for client
certificates (``verify_mode = CERT_REQUIRED`` plus the CA, or the self-signed certificates,
it trusts). A request with ``client_id`` and no other credentials is then authenticated by
the connection's certificate: its subject DN (``tls_client_auth``) or the very certificate
registered for the client (``self_signed_tls_client_auth``).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Mapping
from contextvars import ContextVar

import anyio.abc
from anyio.streams.tls import TLSAttribute

from ._model import IdPClient
from ._token import Attempt, Refusal

__all__ = [
    "authenticate_by_certificate",
    "certificate_thumbprint",
    "peer_thumbprint",
    "remember_peer_certificate",
]

#: The DER client certificate of the connection being served (one task per connection).
_peer: ContextVar[bytes | None] = ContextVar("tokenflight_idp_peer_certificate", default=None)


def remember_peer_certificate(stream: anyio.abc.ByteStream) -> None:
    """Note the connection's client certificate for the requests served on it."""
    _peer.set(stream.extra(TLSAttribute.peer_certificate_binary, None))


def peer_thumbprint() -> str | None:
    """The ``x5t#S256`` of the connection's client certificate, if it presented one."""
    der = _peer.get()
    return None if der is None else certificate_thumbprint(der)


def certificate_thumbprint(certificate: str | bytes) -> str:
    """The ``x5t#S256`` of a certificate, PEM or DER (RFC 7515 section 4.1.8)."""
    der = _der(certificate)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _der(certificate: str | bytes) -> bytes:
    if isinstance(certificate, bytes) and not certificate.startswith(b"-----"):
        return certificate
    text = certificate.decode() if isinstance(certificate, bytes) else certificate
    return ssl.PEM_cert_to_DER_cert(text.strip())


def subject_dn(der: bytes) -> str:
    """The certificate's subject as an RFC 4514 string."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def authenticate_by_certificate(attempt: Attempt, clients: Mapping[str, IdPClient]) -> None:
    """Authenticate a request that has only a ``client_id`` by the TLS client certificate."""
    der = _peer.get()
    if der is None or attempt.auth_method is not None or attempt.problem is not None:
        return
    client = clients.get(attempt.client_id or "")
    if client is None or (client.tls_subject is None and client.tls_certificate is None):
        return  # answered as "client authentication required"
    if client.tls_subject is not None and subject_dn(der) == client.tls_subject:
        attempt.auth_method = "tls_client_auth"
    elif client.tls_certificate is not None and der == _der(client.tls_certificate):
        attempt.auth_method = "self_signed_tls_client_auth"
    else:
        attempt.problem = Refusal(
            401, "invalid_client", "the client certificate does not match the registration"
        )
        return
    attempt.verified = client
