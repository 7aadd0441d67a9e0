"""No secret and no access token in logs, exceptions, reprs or statistics."""

from __future__ import annotations

import base64
import logging
import secrets
import traceback
from urllib.parse import quote, quote_plus

import anyio
import pytest

from tokenflight import (
    ClientCredentials,
    ClientSecret,
    ClientSecretBasic,
    ClientSecretPost,
    RetryPolicy,
    TokenError,
    TokenManager,
)
from tokenflight._redact import exception_chain
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, total_timeout=5, cooldown=0)


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and the formatted traceback of an exception and everything it chains to."""
    texts: list[str] = []
    for current in exception_chain(exc):
        texts += [str(current), repr(current), *map(repr, vars(current).values())]
        texts += traceback.format_exception(current)
    return texts


def forbidden(secret: str, tokens: list[str]) -> list[str]:
    """The secret in every spelling a request carries it, and the access tokens."""
    encoded = quote(secret, safe="")
    basic = base64.b64encode(f"acme:{encoded}".encode()).decode()
    return [secret, quote_plus(secret), encoded, basic, *tokens]


@pytest.mark.parametrize("method", [ClientSecretBasic, ClientSecretPost])
async def test_no_secret_or_token_leaks_across_faults(caplog, method):
    """Logs (DEBUG), errors, chained causes and reprs never show the secret or a token."""
    caplog.set_level(logging.DEBUG)
    secret = "S3CR3T-" + secrets.token_hex(12)
    planted = "PLANTED-" + secrets.token_hex(12)  # an access token inside a bad response
    texts: list[str] = []
    tokens: list[str] = [planted]
    async with IdentityProvider() as idp, IdentityProvider() as other:
        idp.add_client("acme", secret)
        good = ClientCredentials(token_url=idp.token_url, client_id="acme", auth=method(secret))
        bad = ClientCredentials(
            token_url=idp.token_url, client_id="acme", auth=method(secret + "-wrong")
        )
        faults = [
            Fault(status=503),
            Fault(status=200, drop=True),
            Fault(drop=True),
            Fault(status=200, body=b"<html>oops</html>"),
            Fault(status=200, body=b'{"access_token":"%s","token_type":"MAC"}' % planted.encode()),
            Fault(status=200, body=b'{"access_token":"%s"' % planted.encode()),
            Fault(status=302, headers={"Location": other.token_url}),
            Fault(status=400, body=b'{"error":"invalid_request","error_description":"x"}'),
        ]
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", good)
            token = await tm.get_token("acme")
            tokens.append(token.access_token)
            auth = tm.auth("acme")
            texts += [repr(good), str(good), repr(bad), repr(token), str(token), repr(tm)]
            texts += [repr(auth), str(auth), repr(tm.stats()), str(tm.stats())]
            for fault in faults:
                idp.inject(fault, count=None)
                tm.invalidate("acme")
                with anyio.fail_after(5), pytest.raises(TokenError) as info:
                    await tm.get_token("acme")
                texts += exception_texts(info.value)
                idp.clear_faults()
            tm.register("acme", bad)
            with pytest.raises(TokenError) as info:
                await tm.get_token("acme")
            texts += exception_texts(info.value)
            texts += [repr(tm.stats()), repr(tm)]
        texts += [repr(r) for r in idp.requests]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    assert any("acme" in text for text in texts)  # the client id may appear, and did
    assert len(caplog.records) > 10
    haystack = "\n".join(texts)
    for needle in forbidden(secret, tokens):
        assert needle not in haystack


async def test_token_and_credentials_reprs_hide_values():
    """repr/str of ClientCredentials and Token leave out the secret and the access token."""
    secret = "S3CR3T-" + secrets.token_hex(12)
    async with IdentityProvider() as idp:
        idp.add_client("acme", secret)
        good = ClientCredentials(
            token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(secret)
        )
        async with TokenManager(retry=RETRY) as tm:
            tm.register("acme", good)
            token = await tm.get_token("acme")
            for text in (repr(good), str(good), repr(token), str(token)):
                assert secret not in text
                assert token.access_token not in text
            assert "acme" in repr(good)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:S3CR3T@idp.example/t?q=1", "https://user:***@idp.example/t?q=1"),
        ("htps://user:S3CR3T@idp.example:8443/t", "htps://user:***@idp.example:8443/t"),
        ("https://:S3CR3T@idp.example/t", "https://:***@idp.example/t"),
        ("http://[::1:S3CR3T@x/t", "***@x/t"),  # not a URL urlsplit reads
        ("https://user@idp.example/t", "https://user@idp.example/t"),
        ("https://idp.example/t", "https://idp.example/t"),
    ],
)
def test_redact_url_hides_the_password(url, shown):
    """redact_url shows a URL's userinfo password as *** and keeps the rest."""
    from tokenflight._redact import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize("field", ["token_url", "issuer"])
@pytest.mark.parametrize(
    "url",
    [
        "htps://user:S3CR3T@idp.example/token",
        "https://user:S3CR3T@idp.example/token",
        "http://user:S3CR3T@idp.example/token",
    ],
)
def test_configuration_errors_never_quote_a_url_password(field, url):
    """A token_url or issuer with a password is refused with a message that omits it."""
    from tokenflight import ConfigurationError

    kwargs = {field: url}
    with pytest.raises(ConfigurationError) as info:
        ClientCredentials(client_id="acme", auth=ClientSecret("x"), **kwargs)
    assert "S3CR3T" not in str(info.value)
    assert field in str(info.value)


def test_discovered_token_endpoint_password_is_not_quoted():
    """Metadata naming a token_endpoint with a password is refused without quoting it."""
    from tokenflight import ConfigurationError
    from tokenflight._discovery import _parse

    document = {"issuer": "https://idp.example", "token_endpoint": "htps://u:S3CR3T@idp.example/t"}
    with pytest.raises(ConfigurationError) as info:
        _parse(document, 3600.0, "https://idp.example", "https://idp.example/.well-known/x", False)
    assert "S3CR3T" not in str(info.value)
    assert "u:***@idp.example" in str(info.value)
    document = {"issuer": "https://u:S3CR3T@evil.example"}
    with pytest.raises(ConfigurationError) as info:
        _parse(document, 3600.0, "https://idp.example", "https://idp.example/.well-known/x", False)
    assert "S3CR3T" not in str(info.value)
