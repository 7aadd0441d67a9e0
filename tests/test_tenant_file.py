"""The command line's TOML tenants cover every credential type (issue 12), with `*_env`
and `*_file` for secrets and a "did you mean" for misspelt settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from joserfc.jwk import RSAKey

from test_client_auth import certificate_for
from tokenflight import (
    ClientSecret,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    ConfigurationError,
    MutualTLS,
    PrivateKeyJWT,
    SelfSignedMutualTLS,
)
from tokenflight._cli import main
from tokenflight._tenant_file import load_tenant
from tokenflight.testing import IdentityProvider

SECRET = "a-toml-secret-of-more-than-32-bytes!"
URL = "https://idp.example/oauth/token"


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.acme]\nclient_id = "acme"\n' + body, encoding="utf-8")
    return path


# Not the shipped tokenflight_idp: one per module, with no client (each test adds its own).
@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    """The bundled IdP served by its own event loop in a background thread."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(IdentityProvider()) as server,
    ):
        yield server


def test_secret_methods_from_env_and_file(tmp_path, monkeypatch):
    """A secret from `client_secret_env` or `client_secret_file` (trailing newline dropped)
    gives Basic by default, the form body, a JWT or a negotiated secret as asked."""
    monkeypatch.setenv("ACME_SECRET", SECRET + "\n")
    (tmp_path / "secret.txt").write_text(SECRET + "\n", encoding="utf-8")
    env = f'token_url = "{URL}"\nclient_secret_env = "ACME_SECRET"\n'
    file = f'token_url = "{URL}"\nclient_secret_file = "secret.txt"\n'
    cases = {
        env: ClientSecretBasic(SECRET),
        file + 'auth_method = "client_secret_post"\n': ClientSecretPost(SECRET),
        env + 'auth_method = "client_secret_jwt"\nkey_id = "k1"\n': ClientSecretJWT(
            SECRET, key_id="k1"
        ),
        'issuer = "https://idp.example"\nclient_secret_env = "ACME_SECRET"\n': ClientSecret(SECRET),
    }
    for body, expected in cases.items():
        assert load_tenant(config(tmp_path, body), "acme").client_auth == expected


def test_private_key_from_a_file_or_a_jwk_in_the_environment(tmp_path, monkeypatch):
    """private_key_file (PEM) with its certificate, or private_key_env (a JWK), is
    private_key_jwt with the key id, algorithm, audience and lifetime given."""
    key = RSAKey.generate_key(2048)
    (tmp_path / "key.pem").write_bytes(key.as_pem(private=True))
    (tmp_path / "cert.pem").write_text(certificate_for(key), encoding="utf-8")
    body = (
        f'token_url = "{URL}"\nprivate_key_file = "key.pem"\ncertificate_file = "cert.pem"\n'
        'key_id = "k1"\nsigning_alg = "PS256"\nassertion_audience = "issuer"\n'
        'issuer = "https://idp.example"\nassertion_lifetime = 30\n'
    )
    auth = load_tenant(config(tmp_path, body), "acme").client_auth
    assert isinstance(auth, PrivateKeyJWT)
    assert (auth.key_id, auth.alg, auth.audience, auth.lifetime) == ("k1", "PS256", "issuer", 30)
    assert auth.certificate == (tmp_path / "cert.pem").read_text(encoding="utf-8")
    monkeypatch.setenv("ACME_JWK", json.dumps(key.as_dict(private=True)))
    body = f'token_url = "{URL}"\nprivate_key_env = "ACME_JWK"\n'
    auth = load_tenant(config(tmp_path, body), "acme").client_auth
    assert isinstance(auth, PrivateKeyJWT)
    assert auth.key == key.as_dict(private=True)


def test_mutual_tls_files_are_relative_to_the_config(tmp_path):
    """client_cert alone is tls_client_auth; its files resolve next to the config file."""
    body = (
        f'token_url = "{URL}"\nclient_cert = "c.pem"\nclient_key = "k.pem"\nca_bundle = "ca.pem"\n'
    )
    auth = load_tenant(config(tmp_path, body), "acme").client_auth
    assert auth == MutualTLS(
        str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"), ca=str(tmp_path / "ca.pem")
    )
    body = (
        f'token_url = "{URL}"\nclient_cert = "c.pem"\nauth_method = "self_signed_tls_client_auth"\n'
    )
    assert isinstance(load_tenant(config(tmp_path, body), "acme").client_auth, SelfSignedMutualTLS)


def test_dpop_scopes_and_the_rest_pass_through(tmp_path, monkeypatch):
    """dpop, scopes (a list or a string), audience, resource and extra_params are kept."""
    monkeypatch.setenv("ACME_SECRET", SECRET)
    body = (
        f'token_url = "{URL}"\nclient_secret_env = "ACME_SECRET"\ndpop = true\n'
        'scopes = "read write"\naudience = "https://api.example"\n'
        'extra_params = { tenant = "t1" }\n'
    )
    creds = load_tenant(config(tmp_path, body), "acme")
    assert (creds.dpop, creds.scopes, creds.audience) == (
        True,
        ("read", "write"),
        "https://api.example",
    )
    assert creds.extra_params == {"tenant": "t1"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'client_secert_env = "X"\n',
            "unknown setting 'client_secert_env'; did you mean 'client_secret_env'?",
        ),
        ('privatekey_file = "k.pem"\n', "did you mean 'private_key_file'?"),
        ('auth_method = "private_key_jtw"\n', "did you mean 'private_key_jwt'?"),
        ("scopes = 5\n", "scopes must be a list or a string"),
        ('dpop = "yes"\n', "dpop must be true or false"),
        ('client_secret_env = "TOKENFLIGHT_UNSET_VARIABLE"\n', "is not set"),
        ('client_secret_file = "missing.txt"\n', "cannot read client_secret_file"),
        ('private_key_file = "missing.pem"\n', "cannot read private_key_file"),
        ('auth_method = "tls_client_auth"\n', "needs client_cert"),
        ('client_secret = "s"\nclient_cert = "c.pem"\n', "client_cert is only used with"),
        ("", "set client_secret_env"),
    ],
)
def test_mistakes_are_one_clear_error(body, message, tmp_path):
    """Each mistake is a ConfigurationError that says what to fix."""
    path = config(tmp_path, f'token_url = "{URL}"\n' + body)
    with pytest.raises(ConfigurationError) as caught:
        load_tenant(path, "acme")
    assert message in str(caught.value)


def test_cli_gets_a_token_with_a_private_key_file(idp, tmp_path, capsys):
    """`tokenflight token` with a private_key_jwt tenant gets a token from the IdP, and a
    misspelt setting is one line on stderr with exit status 2."""
    key = RSAKey.generate_key(2048)
    idp.add_client("signer", public_key=key.as_dict(private=False))
    (tmp_path / "key.pem").write_bytes(key.as_pem(private=True))
    path = tmp_path / "tenants.toml"
    path.write_text(
        f'[tenants.s]\ntoken_url = "{idp.token_url}"\nclient_id = "signer"\n'
        'private_key_file = "key.pem"\n',
        encoding="utf-8",
    )
    out = StringIO()
    assert main(["token", "s", "--config", str(path)], out=out) == 0
    assert out.getvalue().strip()
    assert idp.requests[-1].auth_method == "private_key_jwt"
    path.write_text(path.read_text() + 'key_idd = "x"\n', encoding="utf-8")
    capsys.readouterr()
    assert main(["token", "s", "--config", str(path)], out=StringIO()) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("unknown setting 'key_idd'; did you mean 'key_id'?")
