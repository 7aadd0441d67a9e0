"""DPoP (RFC 9449) end to end: bound tokens, proofs per request, nonces."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from helpers import creds
from tokenflight import TokenManager
from tokenflight._dpop import DPoPProver, NonceBook

pytestmark = pytest.mark.anyio


def b64json(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def parts(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = proof.split(".")
    return b64json(head), b64json(body)


async def test_dpop_token_is_bound_and_used_with_proofs(idp):
    """A DPoP slot gets token_type DPoP; resource calls send DPoP auth plus a valid proof."""
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        token = await tokens.get_token("t")
        assert token.token_type == "DPoP"
        async with httpx.AsyncClient(auth=tokens.auth("t")) as api:
            for _ in range(3):  # a fresh proof each time: a replayed jti would be refused
                response = await api.get(idp.resource_url + "?page=2")
                assert response.status_code == 200, response.text
                assert response.request.headers["authorization"] == f"DPoP {token.access_token}"
        assert idp.resource_rejections == 0


async def test_bound_token_sent_as_bearer_is_refused(idp):
    """The bound token without a proof (as Bearer) is refused by the resource."""
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        token = await tokens.get_token("t")
    async with httpx.AsyncClient() as http:
        bearer = {"Authorization": f"Bearer {token.access_token}"}
        assert (await http.get(idp.resource_url, headers=bearer)).status_code == 401


async def test_proof_for_another_url_or_key_or_replayed_is_refused(idp):
    """A proof for another URL, by another key, or sent twice is invalid_dpop_proof."""
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        token = await tokens.get_token("t")
        prover = tokens.dpop_prover("t")
        assert prover is not None
    at = token.access_token
    auth = {"Authorization": f"DPoP {at}"}
    wrong_url = prover.proof("GET", idp.url + "/api/other", access_token=at)
    other_key = DPoPProver(NonceBook()).proof("GET", idp.resource_url, access_token=at)
    good = prover.proof("GET", idp.resource_url, access_token=at)
    async with httpx.AsyncClient() as http:
        for proof in (wrong_url, other_key):
            response = await http.get(idp.resource_url, headers=auth | {"DPoP": proof})
            assert response.status_code == 401
            assert 'error="invalid_dpop_proof"' in response.headers["www-authenticate"]
        assert (await http.get(idp.resource_url, headers=auth | {"DPoP": good})).status_code == 200
        replay = await http.get(idp.resource_url, headers=auth | {"DPoP": good})
        assert replay.status_code == 401


async def test_token_request_proof_for_another_url_is_refused(idp):
    """At the token endpoint, a proof whose htu is another URL answers invalid_dpop_proof."""
    proof = DPoPProver(NonceBook()).proof("POST", idp.url + "/elsewhere")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            idp.token_url,
            data={"grant_type": "client_credentials"},
            auth=("acme", idp.clients["acme"].secret),
            headers={"DPoP": proof},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_nonce_from_token_endpoint_is_retried_and_remembered(idp):
    """use_dpop_nonce is retried once with the nonce, which then serves the same server."""
    idp.dpop.nonce = "nonce-1"
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        token = await tokens.get_token("t")
        assert token.token_type == "DPoP"
        assert [r.status for r in idp.requests] == [400, 200]
        async with httpx.AsyncClient(auth=tokens.auth("t")) as api:
            assert (await api.get(idp.resource_url)).status_code == 200
        assert idp.resource_requests == 1
        assert tokens.dpop_nonces.get(idp.resource_url) == "nonce-1"


async def test_new_resource_nonce_is_retried_once_without_refetching(idp):
    """A resource's use_dpop_nonce 401 is answered by one retry; the token is kept."""
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        async with httpx.AsyncClient(auth=tokens.auth("t")) as api:
            assert (await api.get(idp.resource_url)).status_code == 200
            idp.dpop.nonce = "rotated"
            assert (await api.get(idp.resource_url)).status_code == 200
        assert idp.resource_requests == 3
        assert idp.resource_rejections == 1
        assert idp.token_requests == 1


async def test_each_slot_has_its_own_key(idp):
    """Two keys of one tenant are bound to two different DPoP key pairs."""
    async with TokenManager() as tokens:
        tokens.register("t", creds(idp, dpop=True))
        await tokens.get_token("t")
        await tokens.get_token("t", scopes=["other"])
        one, two = tokens.dpop_prover("t"), tokens.dpop_prover("t", scopes=["other"])
        assert one is not None
        assert two is not None
        assert one.thumbprint != two.thumbprint


def test_proof_claims():
    """A proof has typ dpop+jwt, a public jwk, htm, htu without query, iat, jti and ath."""
    prover = DPoPProver(NonceBook())
    header, claims = parts(prover.proof("get", "https://rs.example/a/b?x=1#f", access_token="tok"))
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert "d" not in header["jwk"]
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://rs.example/a/b"
    digest = hashlib.sha256(b"tok").digest()
    assert claims["ath"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert claims["jti"] != parts(prover.proof("GET", "https://rs.example/"))[1]["jti"]
    assert "nonce" not in claims
    private = prover._key.as_dict(private=True)["d"]
    assert isinstance(private, str)
    assert private not in repr(prover)


class CountingStore:
    """A TokenStore that fetches through and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def fetch(self, key, fetch_new, *, min_ttl, current, deadline=None):
        self.asked += 1
        return await fetch_new()

    async def invalidate(self, key, access_token):
        pass

    async def aclose(self):
        pass


async def test_dpop_tokens_bypass_a_shared_store(idp):
    """A DPoP token is bound to this process's key, so it is never put in a shared store."""
    store = CountingStore()
    async with TokenManager(store=store) as tokens:
        tokens.register("dpop", creds(idp, dpop=True))
        tokens.register("plain", creds(idp))
        assert (await tokens.get_token("dpop")).token_type == "DPoP"
        assert store.asked == 0
        await tokens.get_token("plain")
        assert store.asked == 1
