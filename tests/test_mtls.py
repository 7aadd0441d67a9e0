"""Mutual TLS client authentication (RFC 8705) against the bundled IdP behind TLS."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import self_signed_certificate
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ConfigurationError,
    MutualTLS,
    RetryPolicy,
    SelfSignedMutualTLS,
    TokenEndpointUnavailable,
    TokenManager,
    TokenRequestRefused,
)
from tokenflight.testing import IdentityProvider

pytestmark = pytest.mark.anyio


def subject_of(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return self_signed_certificate(key, name), key_pem


class PKI:
    """A CA, the IdP's server certificate, two CA-issued client certs and a self-signed one."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1")
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.files: dict[str, str] = {}
        self.subjects: dict[str, str] = {}
        for name in ("acme", "other"):
            leaf = self.ca.issue_cert(f"{name}.client.example", common_name=f"{name}-client")
            path = tmp / f"{name}.pem"
            leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
            self.files[name] = str(path)
            self.subjects[name] = subject_of(leaf.cert_chain_pems[0].bytes())
        self.self_signed_cert, key = self_signed("selfie")
        (tmp / "selfie.pem").write_bytes(key + self.self_signed_cert)
        self.files["selfie"] = str(tmp / "selfie.pem")

    def server_context(self, verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        self.ca.configure_trust(context)
        context.load_verify_locations(cadata=self.self_signed_cert.decode())
        context.verify_mode = verify_mode
        return context


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def tls_creds(
    idp: IdentityProvider,
    pki: PKI,
    name: str = "acme",
    method: type[MutualTLS | SelfSignedMutualTLS] = MutualTLS,
    **kwargs,
) -> ClientCredentials:
    """Credentials presenting the client's certificate with `method`."""
    kwargs.setdefault("token_url", idp.token_url)
    auth = method(pki.files[name], ca=str(pki.ca_file))
    return ClientCredentials(client_id=name, auth=auth, **kwargs)


async def test_tls_client_auth_gets_a_token(pki):
    """A CA-issued client certificate whose subject is registered authenticates the client."""
    async with IdentityProvider(tls=pki.server_context()) as idp, TokenManager() as tokens:
        assert idp.token_url.startswith("https://")
        idp.add_client("acme", tls_subject=pki.subjects["acme"])
        tokens.register("t", tls_creds(idp, pki))
        assert (await tokens.get_token("t")).access_token
        (record,) = idp.requests
        assert (record.auth_method, record.status) == ("tls_client_auth", 200)
        assert record.form == {"grant_type": "client_credentials", "client_id": "acme"}


async def test_self_signed_tls_client_auth_gets_a_token(pki):
    """The very self-signed certificate registered for the client authenticates it."""
    async with IdentityProvider(tls=pki.server_context()) as idp, TokenManager() as tokens:
        idp.add_client("selfie", tls_certificate=pki.self_signed_cert)
        tokens.register("t", tls_creds(idp, pki, "selfie", SelfSignedMutualTLS))
        assert (await tokens.get_token("t")).access_token
        assert idp.requests[0].auth_method == "self_signed_tls_client_auth"


async def test_certificate_of_another_client_is_invalid_client(pki):
    """A valid certificate whose subject is not the client's answers 401 invalid_client."""
    async with IdentityProvider(tls=pki.server_context()) as idp, TokenManager() as tokens:
        idp.add_client("other", tls_subject=pki.subjects["other"])
        creds = tls_creds(idp, pki, "acme")
        tokens.register("t", dataclasses.replace(creds, client_id="other"))
        with pytest.raises(TokenRequestRefused) as caught:
            await tokens.get_token("t")
        assert (caught.value.error, caught.value.status_code) == ("invalid_client", 401)


async def test_server_requires_a_client_certificate(pki):
    """Without a client certificate the TLS handshake fails: no token, transport error."""
    server = pki.server_context()
    # TLS 1.2 refuses in the handshake itself. (With TLS 1.3 the refusal arrives while the
    # request is sent, and httpcore under trio then leaves httpx's body generator unclosed.)
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    async with IdentityProvider(tls=server) as idp:
        idp.add_client("acme", "s3cret")
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        async with httpx.AsyncClient(verify=context) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(idp.token_url, data={"grant_type": "client_credentials"})
            async with TokenManager(http_client=http, retry=RetryPolicy(attempts=1)) as tokens:
                tokens.register(
                    "t",
                    ClientCredentials(
                        token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic("s3cret")
                    ),
                )
                with pytest.raises(TokenEndpointUnavailable):
                    await tokens.get_token("t")
        assert idp.token_requests == 0


async def test_one_pool_per_certificate(pki):
    """Two tenants with two certificates use two pooled clients and are told apart."""
    async with IdentityProvider(tls=pki.server_context()) as idp, TokenManager() as tokens:
        for name in ("acme", "other"):
            idp.add_client(name, tls_subject=pki.subjects[name])
            tokens.register(name, tls_creds(idp, pki, name))
        await tokens.get_token("acme")
        await tokens.get_token("other")
        await tokens.get_token("acme", scopes=["more"])
        assert len(tokens._tls_clients) == 2
        assert [r.client_id for r in idp.requests] == ["acme", "other", "acme"]
        assert idp.connections == 2


async def test_discovery_uses_mtls_endpoint_aliases(pki):
    """With MutualTLS and an issuer, discovery uses the mtls_endpoint_aliases token URL."""
    context = pki.server_context(ssl.CERT_OPTIONAL)
    async with IdentityProvider(tls=context) as idp:
        idp.add_client("acme", tls_subject=pki.subjects["acme"])
        idp.metadata_overrides = {
            "token_endpoint": "https://127.0.0.1:9/not-the-mtls-endpoint",
            "mtls_endpoint_aliases": {"token_endpoint": idp.token_url},
        }
        trust = ssl.create_default_context(cafile=str(pki.ca_file))
        async with (
            httpx.AsyncClient(verify=trust) as http,
            TokenManager(http_client=http) as tokens,
        ):
            tokens.register("t", tls_creds(idp, pki, token_url=None, issuer=idp.url))
            assert (await tokens.get_token("t")).access_token
        assert idp.requests[0].auth_method == "tls_client_auth"


@pytest.mark.parametrize("method", [MutualTLS, SelfSignedMutualTLS])
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"cert": ""}, "cert must be a file path"),
        ({"cert": None}, "cert must be a file path"),
        ({"cert": "c.pem", "key": ""}, "key must be a file path"),
        ({"cert": "c.pem", "ca": 3}, "ca must be a file path"),
    ],
    ids=["empty", "none", "key", "ca"],
)
def test_tls_method_without_certificate_is_a_configuration_error(method, files, message):
    """A TLS method without a certificate path (or with a bad key/CA path) is refused when made."""
    with pytest.raises(ConfigurationError, match=message):
        method(**files)


async def test_unreadable_certificate_is_a_configuration_error(pki, tmp_path):
    """A certificate file that does not exist raises ConfigurationError naming it."""
    async with IdentityProvider(tls=pki.server_context()) as idp, TokenManager() as tokens:
        missing = str(tmp_path / "missing.pem")
        tokens.register(
            "t",
            ClientCredentials(
                token_url=idp.token_url,
                client_id="acme",
                auth=MutualTLS(missing),
            ),
        )
        with pytest.raises(ConfigurationError, match=r"missing\.pem"):
            await tokens.get_token("t")
