"""The bundled identity provider, spoken to over real HTTP on loopback."""

from __future__ import annotations

import base64
import gc
import warnings
from collections.abc import AsyncIterator
from urllib.parse import quote_plus

import anyio
import httpx
import pytest

import tokenflight.testing
from tokenflight.testing import PROFILES, Fault, IdentityProvider, IdPClient

pytestmark = pytest.mark.anyio

GRANT = {"grant_type": "client_credentials"}
NASTY_SECRET = "päss wörd:+%"


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An RFC 6749 section 2.3.1 Basic header: form-urlencoded id and secret."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


# Not conftest's idp: the raw requests below send the known secret "s3cret".
@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with IdentityProvider(profile="generic") as server:
        server.add_client("acme", "s3cret")
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def token(
    http: httpx.AsyncClient, idp: IdentityProvider, client_id: str = "acme", **form: str
) -> str:
    response = await http.post(idp.token_url, data=GRANT | form, headers=basic(client_id, "s3cret"))
    assert response.status_code == 200, response.text
    value = response.json()["access_token"]
    assert isinstance(value, str)
    return value


# -- client authentication -------------------------------------------------------------


async def test_basic_auth_decodes_form_urlencoded_credentials(http):
    """Basic credentials are unquoted (RFC 6749 2.3.1): a secret with ":+%", space, ö works."""
    async with IdentityProvider() as idp:
        idp.add_client("acme corp:1", NASTY_SECRET)
        response = await http.post(
            idp.token_url, data=GRANT, headers=basic("acme corp:1", NASTY_SECRET)
        )
        assert response.status_code == 200, response.text
        assert idp.requests[0].auth_method == "client_secret_basic"
        assert idp.requests[0].client_id == "acme corp:1"


async def test_basic_auth_without_urlencoding_is_refused(http):
    """A secret holding '+' sent raw (not form-urlencoded) decodes to a space and is refused."""
    async with IdentityProvider() as idp:
        idp.add_client("acme", "a+b")
        response = await http.post(idp.token_url, data=GRANT, auth=("acme", "a+b"))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_form_body_authentication(idp, http):
    """client_id/client_secret in the form authenticate, and the record keeps no secret."""
    form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
    response = await http.post(idp.token_url, data=form)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 40
    assert response.headers["cache-control"] == "no-store"
    (record,) = idp.requests
    assert record.auth_method == "client_secret_post"
    assert record.status == 200
    assert record.form == {"grant_type": "client_credentials", "client_id": "acme"}


async def test_two_authentication_methods_are_invalid_request(idp, http):
    """Basic and a form client_secret in one request answer 400 invalid_request."""
    form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
    response = await http.post(idp.token_url, data=form, headers=basic("acme", "s3cret"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_wrong_secret_with_basic_is_401_with_challenge(idp, http):
    """A wrong Basic secret answers 401 invalid_client with a Basic WWW-Authenticate challenge."""
    response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "nope"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="tokenflight-idp"'


async def test_unknown_client_in_form_is_401_without_challenge(idp, http):
    """An unknown form-body client answers 401 invalid_client without a Basic challenge."""
    form = GRANT | {"client_id": "ghost", "client_secret": "s3cret"}
    response = await http.post(idp.token_url, data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "www-authenticate" not in response.headers


async def test_no_credentials_is_invalid_client(idp, http):
    """A request without any client authentication answers 401 invalid_client."""
    response = await http.post(idp.token_url, data=GRANT)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
)
async def test_grant_type_errors(idp, http, form, error):
    """A missing grant_type is invalid_request and another grant is unsupported_grant_type."""
    response = await http.post(idp.token_url, data=form, headers=basic("acme", "s3cret"))
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_non_form_body_is_invalid_request(idp, http):
    """A JSON body instead of a form answers 400 invalid_request."""
    response = await http.post(idp.token_url, json=GRANT, headers=basic("acme", "s3cret"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_wrong_method_and_unknown_path(idp, http):
    """GET on the token endpoint answers 405 and an unknown path 404."""
    assert (await http.get(idp.token_url)).status_code == 405
    assert (await http.post(idp.url + "/nowhere", data=GRANT)).status_code == 404
    assert idp.token_requests == 0


# -- profiles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "path", "basic_auth", "token_type", "expires_in"),
    [
        ("generic", "/oauth/token", True, "Bearer", 3600),
        ("dwolla", "/token", True, "bearer", 3599),
        ("dwolla-legacy", "/oauth/v2/token", False, "bearer", 3600),
        ("auth0", "/oauth/token", False, "Bearer", 86400),
    ],
)
async def test_profile_endpoint_and_answer(http, profile, path, basic_auth, token_type, expires_in):
    """Each profile serves its path, its client authentication, token_type and lifetime."""
    async with IdentityProvider(profile=profile) as idp:
        idp.add_client("acme", "s3cret", scopes=["read"], default_audience="https://api")
        assert idp.token_url == idp.url + path
        if basic_auth:
            response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
        else:
            form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
            response = await http.post(idp.token_url, data=form)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == token_type
        assert body["expires_in"] == expires_in
        assert ("scope" in body) is PROFILES[profile].include_scope


async def test_dwolla_refuses_form_body_credentials(http):
    """Dwolla's current API accepts Basic only: form-body credentials answer 401 invalid_client."""
    async with IdentityProvider(profile="dwolla") as idp:
        idp.add_client("acme", "s3cret")
        form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
        response = await http.post(idp.token_url, data=form)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_dwolla_legacy_refuses_basic(http):
    """Dwolla's legacy endpoint takes credentials in the form only: Basic answers 401."""
    async with IdentityProvider(profile="dwolla-legacy") as idp:
        idp.add_client("acme", "s3cret")
        response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_auth0_refusals(http):
    """Auth0: no audience is 403, a wrong secret 401, an unknown audience 403, all access_denied."""
    async with IdentityProvider(profile="auth0") as idp:
        idp.add_client("acme", "s3cret", audiences=["https://api"])
        form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
        missing = await http.post(idp.token_url, data=form)
        assert missing.status_code == 403
        assert missing.json() == {
            "error": "access_denied",
            "error_description": "No audience parameter was provided, "
            "and no default audience has been configured",
        }
        wrong = await http.post(idp.token_url, data=form | {"client_secret": "x", "audience": "a"})
        assert wrong.status_code == 401
        assert wrong.json() == {"error": "access_denied", "error_description": "Unauthorized"}
        unknown = await http.post(idp.token_url, data=form | {"audience": "https://other"})
        assert unknown.status_code == 403
        assert unknown.json()["error"] == "access_denied"
        ok = await http.post(idp.token_url, data=form | {"audience": "https://api"})
        assert ok.status_code == 200
        assert ok.json()["expires_in"] == 86400
        assert idp.token_requests_for(audience="https://api") == 1


async def test_oauth_school_has_a_default_audience(http):
    """The oauth-school profile answers a request without audience, for its default API."""
    async with IdentityProvider(profile="oauth-school") as idp:
        idp.add_client("acme", "s3cret")
        form = GRANT | {"client_id": "acme", "client_secret": "s3cret"}
        response = await http.post(idp.token_url, data=form)
        assert response.status_code == 200
        assert idp.requests[0].audience == PROFILES["oauth-school"].default_audience


async def test_audience_and_resource_targets(idp, http):
    """Targets outside the client's audiences are invalid_target; repeated resources are kept."""
    idp.add_client("acme", "s3cret", audiences=["https://a", "https://b"])
    headers = basic("acme", "s3cret")
    bad = await http.post(idp.token_url, data=GRANT | {"audience": "https://c"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_target"
    form = {**GRANT, "resource": ["https://a", "https://b"]}
    ok = await http.post(idp.token_url, data=form, headers=headers)
    assert ok.status_code == 200
    assert idp.requests[-1].resource == ("https://a", "https://b")
    bad_resource = await http.post(
        idp.token_url, data={**GRANT, "resource": ["https://a", "https://z"]}, headers=headers
    )
    assert bad_resource.json()["error"] == "invalid_target"


async def test_scope_handling(idp, http):
    """Allowed scopes are echoed, others are invalid_scope, none requested grants the defaults."""
    idp.add_client("scoped", "s3cret", scopes=["read", "write"])
    headers = basic("scoped", "s3cret")
    ok = await http.post(idp.token_url, data=GRANT | {"scope": "write"}, headers=headers)
    assert ok.json()["scope"] == "write"
    bad = await http.post(idp.token_url, data=GRANT | {"scope": "read admin"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_scope"
    default = await http.post(idp.token_url, data=GRANT, headers=headers)
    assert default.json()["scope"] == "read write"
    unscoped = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert "scope" not in unscoped.json()


async def test_lifetime_overrides(http):
    """A client lifetime beats the IdP's, which beats the profile's; fractions stay fractions."""
    async with IdentityProvider(profile="auth0", token_lifetime=120) as idp:
        idp.add_client("acme", "s3cret", default_audience="https://api")
        idp.add_client("quick", "s3cret", default_audience="https://api", token_lifetime=0.5)
        acme = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
        quick = await http.post(idp.token_url, data=GRANT, headers=basic("quick", "s3cret"))
        assert acme.json()["expires_in"] == 120
        assert quick.json()["expires_in"] == 0.5


# -- protected resource ----------------------------------------------------------------


async def test_resource_accepts_issued_token(idp, http):
    """The protected resource accepts a token this IdP issued, with any scheme case."""
    access = await token(http, idp, audience="https://api")
    response = await http.get(idp.resource_url, headers={"Authorization": f"bearer {access}"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "client_id": "acme", "audience": "https://api"}
    assert (idp.resource_requests, idp.resource_rejections) == (1, 0)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic YWNtZTpzM2NyZXQ="])
async def test_resource_rejects_missing_or_unknown_token(idp, http, authorization):
    """Without a token this IdP issued, the resource answers 401 invalid_token."""
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await http.post(idp.resource_url, headers=headers, content=b"x" * 1000)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert (idp.resource_requests, idp.resource_rejections) == (1, 1)


async def test_resource_rejects_expired_token(http):
    """A token is refused by the resource once its lifetime has passed on the IdP's clock."""
    async with IdentityProvider(token_lifetime=0.3) as idp:
        idp.add_client("acme", "s3cret")
        access = await token(http, idp)
        headers = {"Authorization": f"Bearer {access}"}
        assert (await http.get(idp.resource_url, headers=headers)).status_code == 200
        await anyio.sleep(0.4)
        assert (await http.get(idp.resource_url, headers=headers)).status_code == 401


async def test_injected_clock_decides_expiry(http):
    """Tokens expire on the injected clock, not on real time."""
    now = [1000.0]
    async with IdentityProvider(token_lifetime=60, clock=lambda: now[0]) as idp:
        idp.add_client("acme", "s3cret")
        headers = {"Authorization": f"Bearer {await token(http, idp)}"}
        now[0] += 59.9
        assert (await http.get(idp.resource_url, headers=headers)).status_code == 200
        now[0] += 0.1
        assert (await http.get(idp.resource_url, headers=headers)).status_code == 401


async def test_forbidden_resource_is_403_insufficient_scope(idp, http):
    """/api/forbidden with a valid token answers 403 insufficient_scope."""
    headers = {"Authorization": f"Bearer {await token(http, idp)}"}
    response = await http.get(idp.url + "/api/forbidden", headers=headers)
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert idp.resource_rejections == 0


# -- faults ----------------------------------------------------------------------------


async def test_status_fault_for_count_requests(idp, http):
    """A 503 fault with count=3 answers the next three token requests, then normal service."""
    idp.inject(Fault(status=503), count=3)
    statuses = []
    for _ in range(4):
        response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
        statuses.append(response.status_code)
    assert statuses == [503, 503, 503, 200]
    assert response.json()["access_token"]
    assert idp.token_requests == 4
    assert [r.status for r in idp.requests] == statuses


async def test_fault_default_body_and_headers(idp, http):
    """A 429 fault sends its Retry-After header and a small JSON error body."""
    idp.inject(Fault(status=429, headers={"Retry-After": "2"}))
    response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {"error": "too_many_requests"}
    idp.inject(Fault(status=503))
    response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert response.json() == {"error": "temporarily_unavailable"}


async def test_body_and_redirect_faults(idp, http):
    """Faults answer an HTML 200 body and a 302 redirect as given."""
    idp.inject(Fault(status=200, body=b"<html>oops</html>", content_type="text/html"))
    idp.inject(Fault(status=302, headers={"Location": "https://elsewhere/token"}))
    html = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert (html.status_code, html.text) == (200, "<html>oops</html>")
    assert html.headers["content-type"] == "text/html"
    redirect = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "https://elsewhere/token"


@pytest.mark.parametrize("fault", [Fault(drop=True), Fault(status=200, drop=True)])
async def test_drop_fault_closes_connection(idp, http, fault):
    """A drop fault (with or without a partial response) closes the connection, then recovers."""
    idp.inject(fault)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert idp.token_requests == 1
    assert idp.requests[0].status is None
    assert await token(http, idp)


async def test_delay_fault_answers_normally_after_delay(idp, http):
    """A delay-only fault answers a normal token after the delay."""
    idp.inject(Fault(delay=0.3))
    start = anyio.current_time()
    assert await token(http, idp)
    assert anyio.current_time() - start >= 0.3


async def test_latency_delays_every_token_request(http):
    """latency= waits before answering each token request."""
    async with IdentityProvider(latency=0.1) as idp:
        idp.add_client("acme", "s3cret")
        start = anyio.current_time()
        await token(http, idp)
        await token(http, idp)
        assert anyio.current_time() - start >= 0.2


async def test_unbounded_fault_until_cleared(idp, http):
    """A fault with count=None applies until clear_faults()."""
    idp.inject(Fault(status=503), count=None)
    for _ in range(5):
        response = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
        assert response.status_code == 503
    idp.clear_faults()
    assert await token(http, idp)


async def test_faults_spare_the_resource(idp, http):
    """Faults apply to token requests only, not to the protected resource."""
    access = await token(http, idp)
    idp.inject(Fault(status=503), count=None)
    response = await http.get(idp.resource_url, headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 200


# -- token reuse and counters ----------------------------------------------------------


async def test_reuse_tokens(idp, http):
    """With reuse_tokens the same unexpired token comes back with its remaining lifetime."""
    first, second = await token(http, idp), await token(http, idp)
    assert first != second
    idp.reuse_tokens = True
    third = await http.post(idp.token_url, data=GRANT, headers=basic("acme", "s3cret"))
    assert third.json()["access_token"] == second
    assert third.json()["expires_in"] in (3599, 3600)
    other = await token(http, idp, audience="https://other")
    assert other != second


async def test_counters_and_keep_alive(idp, http):
    """Counters filter by client and audience; keep-alive requests share one connection."""
    idp.add_client("beta", "s3cret")
    await token(http, idp)
    await token(http, idp, audience="https://a")
    await token(http, idp, client_id="beta", audience="https://a")
    assert idp.token_requests == 3
    assert idp.token_requests_for(client_id="acme") == 2
    assert idp.token_requests_for(audience="https://a") == 2
    assert idp.token_requests_for(client_id="beta", audience="https://a") == 1
    assert idp.connections == 1
    async with httpx.AsyncClient() as other:
        await token(other, idp)
    assert idp.connections == 2
    idp.reset_counters()
    assert (idp.token_requests, idp.connections, idp.requests) == (0, 0, [])
    assert idp.token_requests_for() == 0


async def test_many_concurrent_requests(idp, http):
    """Concurrent token requests all succeed and are all counted."""
    results: list[str] = []

    async def one() -> None:
        results.append(await token(http, idp))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    assert len(set(results)) == 50
    assert idp.token_requests == 50


# -- lifecycle -------------------------------------------------------------------------


async def test_clean_shutdown_closes_listener_and_connections(http):
    """Leaving the block closes the listener and open connections without ResourceWarning."""

    async def stuck(url: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, data=GRANT, headers=basic("acme", "s3cret"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg, IdentityProvider() as idp:
                idp.add_client("acme", "s3cret")
                url = idp.token_url
                await token(http, idp)
                idp.inject(Fault(delay=30))
                tg.start_soon(stuck, url)
                await anyio.sleep(0.1)
        with pytest.raises(httpx.ConnectError):
            await http.post(url, data=GRANT)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_url_needs_running_server():
    """url raises outside the async with block and the server cannot be entered twice."""
    idp = IdentityProvider()
    with pytest.raises(RuntimeError):
        _ = idp.url
    async with idp:
        with pytest.raises(RuntimeError):
            await idp.__aenter__()


async def test_serve_forever_honours_port(http, free_tcp_port):
    """serve_forever listens on the given port until cancelled."""
    idp = IdentityProvider(port=free_tcp_port)
    idp.add_client("acme", "s3cret")
    async with anyio.create_task_group() as tg:
        url = await tg.start(idp.serve_forever)
        assert url == f"http://127.0.0.1:{free_tcp_port}"
        assert await token(http, idp)
        tg.cancel_scope.cancel()


async def test_pytest_fixture(tokenflight_idp, http):
    """The tokenflight_idp fixture serves a generic IdP with a ready test-client."""
    secret = tokenflight_idp.clients["test-client"].secret
    form = GRANT | {"client_id": "test-client", "client_secret": secret}
    response = await http.post(tokenflight_idp.token_url, data=form)
    assert response.status_code == 200


# -- values ----------------------------------------------------------------------------


def test_values_validate_and_hide_secrets():
    """Bad profiles, lifetimes and faults are refused; a client's repr hides its secret."""
    with pytest.raises(ValueError, match="unknown profile"):
        IdentityProvider(profile="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token_lifetime"):
        IdentityProvider(token_lifetime=0)
    with pytest.raises(ValueError, match="status"):
        Fault(status=42)
    with pytest.raises(ValueError, match="count"):
        IdentityProvider().inject(Fault(status=503), count=0)
    assert "s3cret" not in repr(IdPClient(client_id="acme", secret="s3cret"))


def test_public_names():
    """tokenflight.testing exports its public names in a sorted __all__."""
    names = tokenflight.testing.__all__
    assert names == sorted(names)
    for name in ("Fault", "IdPClient", "IdentityProvider", "PROFILES", "running_idp"):
        assert name in names
        assert getattr(tokenflight.testing, name) is not None


async def test_expired_tokens_are_forgotten(http):
    """Expired tokens are pruned when new ones are issued, so memory stays bounded."""
    now = [0.0]
    async with IdentityProvider(token_lifetime=1, clock=lambda: now[0]) as idp:
        idp.add_client("acme", "s3cret")
        for n in range(20):
            await token(http, idp, audience=f"https://api/{n}")
        now[0] += 1
        await token(http, idp)
        assert (len(idp._tokens), len(idp._current)) == (1, 1)


async def test_revoke_makes_the_resource_refuse_the_token():
    """A revoked token gets 401 at the resource; revoking it again (or a stranger) is False."""
    import httpx

    from tokenflight.testing import IdentityProvider

    async with IdentityProvider() as server, httpx.AsyncClient() as http:
        server.add_client("acme", "s3cret")
        answer = await http.post(
            server.token_url, auth=("acme", "s3cret"), data={"grant_type": "client_credentials"}
        )
        token = answer.json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await http.get(server.resource_url, headers=bearer)).status_code == 200
        assert server.revoke(token)
        assert (await http.get(server.resource_url, headers=bearer)).status_code == 401
        assert not server.revoke(token)
        assert not server.revoke("never-issued")
