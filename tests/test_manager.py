"""TokenManager core: single flight, fast path, keys, client auth, retries, limits, shutdown."""

from __future__ import annotations

import dataclasses

import anyio
import httpx
import pytest

from helpers import CountingTransport, closed_port_url, creds, gather_tokens, wait_until
from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    ClientSecretPost,
    ConfigurationError,
    KeyStatistics,
    ManagerClosedError,
    RetryPolicy,
    TenantResolutionError,
    Token,
    TokenEndpointUnavailable,
    TokenError,
    TokenManager,
    TokenRequestRefused,
    UnknownTenantError,
)
from tokenflight.testing import Fault, IdentityProvider

pytestmark = pytest.mark.anyio

SECRET = "s3cret-value-never-shown"
NASTY_SECRET = "p:a+s%s wörd"
FAST_RETRY = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.02, total_timeout=5)


# -- single flight and the fast path -----------------------------------------------------


async def test_single_flight_cold_key(idp):
    """1,000 concurrent get_token calls on a cold key make one token request and share it."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        results = await gather_tokens(tokens, ["acme"] * 1000)
    assert idp.token_requests == 1
    assert len(results) == 1000
    assert len({t.access_token for t in results}) == 1
    assert tokens.stats().total.fetches == 1


async def test_single_flight_over_fifty_keys(idp):
    """1,000 concurrent calls spread over 50 tenants make exactly 50 token requests."""
    async with TokenManager() as tokens:
        for n in range(50):
            idp.add_client(f"c{n}", SECRET)
            tokens.register(f"t{n}", creds(idp, f"c{n}"))
        results = await gather_tokens(tokens, [f"t{n % 50}" for n in range(1000)])
    assert idp.token_requests == 50
    assert all(idp.token_requests_for(f"c{n}") == 1 for n in range(50))
    assert len({t.access_token for t in results}) == 50


async def test_fast_path_serves_cached_token_without_io(idp):
    """With the IdP dropping every request, 10,000 calls still get the cached token."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        first = await tokens.get_token("acme")
        idp.inject(Fault(drop=True), count=None)
        for _ in range(10_000):
            assert await tokens.get_token("acme") is first
        assert idp.token_requests == 1
        assert tokens.stats().total.hits == 10_000


async def test_fast_path_does_not_suspend(idp):
    """A cached token is returned by a coroutine that completes on its first step (no await)."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp, scopes=("read",)))
        first = await tokens.get_token("acme")
        explicit = await tokens.get_token("acme", scopes=("read",))
        for kwargs in ({}, {"scopes": ("read",)}, {"min_ttl": 1.0}):
            coro = tokens.get_token("acme", **kwargs)
            with pytest.raises(StopIteration) as stop:
                coro.send(None)
            assert stop.value.value is first
        assert explicit is first


async def test_failure_is_shared_by_all_waiters(idp):
    """Concurrent callers of one failing fetch all get its error from a single request."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp, auth=ClientSecretBasic("wrong")))
        errors: list[BaseException] = []

        async def one() -> None:
            try:
                await tokens.get_token("acme")
            except TokenRequestRefused as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)
    assert len(errors) == 200
    assert idp.token_requests == 1


async def test_min_ttl_refreshes_first_in_a_single_flight():
    """A min_ttl the token cannot meet causes one new request for many concurrent callers."""
    async with IdentityProvider(token_lifetime=2) as idp:
        idp.add_client("acme", SECRET)
        async with TokenManager() as tokens:
            tokens.register("acme", creds(idp))
            first = await tokens.get_token("acme")
            assert await tokens.get_token("acme", min_ttl=1.0) is first  # 1.8 s usable left
            await anyio.sleep(first.obtained_at + 1.0 - anyio.current_time())
            results = await gather_tokens(tokens, ["acme"] * 100, min_ttl=1.0)
            assert idp.token_requests == 2
            assert {t.access_token for t in results} == {results[0].access_token}
            assert results[0].access_token != first.access_token
            assert await tokens.get_token("acme", min_ttl=1.0) is results[0]
            assert idp.token_requests == 2


async def test_min_ttl_beyond_the_lifetime_does_not_fetch_on_every_call():
    """A min_ttl longer than any token lives is capped, so repeated calls reuse one token."""
    async with IdentityProvider(token_lifetime=2) as idp:
        idp.add_client("acme", SECRET)
        async with TokenManager() as tokens:
            tokens.register("acme", creds(idp))
            first = await tokens.get_token("acme", min_ttl=3600)
            for _ in range(50):
                assert await tokens.get_token("acme", min_ttl=3600) is first
            assert idp.token_requests == 1


# -- keys ------------------------------------------------------------------------------


async def test_each_key_gets_its_own_slot(idp):
    """Tenant, audience, resource and scope set each make a separate slot and token."""
    idp.add_client("other", SECRET)
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        tokens.register("beta", creds(idp, "other"))
        got = [
            await tokens.get_token("acme"),
            await tokens.get_token("beta"),
            await tokens.get_token("acme", audience="https://a.example"),
            await tokens.get_token("acme", audience="https://b.example"),
            await tokens.get_token("acme", resource="https://r.example"),
            await tokens.get_token("acme", scopes=("read",)),
            await tokens.get_token("acme", scopes=("read", "write")),
        ]
        assert len({t.access_token for t in got}) == 7
        assert idp.token_requests == 7
        assert tokens.stats().slots == 7
    audiences = [r.audience for r in idp.requests]
    assert audiences[2:4] == ["https://a.example", "https://b.example"]
    assert idp.requests[4].resource == ("https://r.example",)
    assert [r.scope for r in idp.requests[5:]] == ["read", "read write"]


async def test_scope_order_and_explicit_defaults_share_a_slot(idp):
    """Scope order does not matter, and spelling out the defaults reuses the default slot."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp, scopes=("a", "b"), audience="https://api.example"))
        implicit = await tokens.get_token("acme")
        same = [
            await tokens.get_token("acme", scopes=("b", "a")),
            await tokens.get_token("acme", scopes=["a", "b"]),
            await tokens.get_token("acme", scopes="b a"),
            await tokens.get_token("acme", scopes=frozenset({"a", "b"})),
            await tokens.get_token("acme", audience="https://api.example"),
            await tokens.get_token("acme", audience="https://api.example", scopes=("b", "a")),
        ]
        assert all(t is implicit for t in same)
        assert idp.token_requests == 1
        assert tokens.stats().slots == 1
    assert idp.requests[0].audience == "https://api.example"
    assert idp.requests[0].scope == "a b"


# -- client authentication -------------------------------------------------------------


@pytest.mark.parametrize("method", [ClientSecretBasic, ClientSecretPost])
async def test_secret_with_special_characters(method):
    """A secret with ':', '+', '%', space and non-ASCII authenticates with either method."""
    async with IdentityProvider() as idp, TokenManager() as tokens:
        idp.add_client("acme:1 ü", NASTY_SECRET)
        tokens.register("acme", creds(idp, "acme:1 ü", method(NASTY_SECRET)))
        await tokens.get_token("acme")
        record = idp.requests[-1]
        assert record.status == 200
        assert record.auth_method == method.method
        assert record.client_id == "acme:1 ü"
        assert ("client_id" in record.form) == (method is ClientSecretPost)


async def test_dwolla_profile_uses_basic_on_token_path():
    """Dwolla's profile (Basic only, /token, expires_in 3599) works with the default method."""
    async with IdentityProvider(profile="dwolla") as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp))
        assert idp.token_url.endswith("/token")
        token = await tokens.get_token("acme")
        assert token.expires_in == 3599
        assert token.token_type == "bearer"
        assert idp.requests[-1].auth_method == "client_secret_basic"


async def test_dwolla_legacy_profile_uses_form_body():
    """Dwolla legacy (form body on /oauth/v2/token) works with client_secret_post only."""
    async with IdentityProvider(profile="dwolla-legacy") as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("post", creds(idp, auth=ClientSecretPost(SECRET)))
        tokens.register("basic", creds(idp))
        token = await tokens.get_token("post")
        assert token.expires_in == 3600
        with pytest.raises(TokenRequestRefused) as refused:
            await tokens.get_token("basic")
        assert refused.value.error == "invalid_client"


async def test_auth0_needs_an_audience():
    """Auth0 without an audience refuses with access_denied/403; with one it gives a token."""
    async with IdentityProvider(profile="auth0") as idp, TokenManager() as tokens:
        idp.add_client("acme", SECRET)
        tokens.register("acme", creds(idp, auth=ClientSecretPost(SECRET)))
        with pytest.raises(TokenRequestRefused) as refused:
            await tokens.get_token("acme")
        assert refused.value.error == "access_denied"
        assert refused.value.status_code == 403
        token = await tokens.get_token("acme", audience="https://api.example")
        assert token.expires_in == 86400
        assert idp.requests[-1].audience == "https://api.example"


# -- retries ---------------------------------------------------------------------------


async def test_retries_5xx_then_succeeds(idp, no_retry_wait):
    """Three 503 answers are retried and the fourth request gives the token."""
    idp.inject(Fault(status=503), count=3)
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        token = await tokens.get_token("acme")
    assert token.access_token
    assert [r.status for r in idp.requests] == [503, 503, 503, 200]
    assert tokens.stats().total.failures == 0


async def test_retries_429_and_dropped_connections(idp):
    """429 and dropped connections are retried (with small policy waits)."""
    idp.inject(Fault(status=429, headers={"Retry-After": "0"}))
    idp.inject(Fault(drop=True), count=2)
    async with TokenManager(retry=FAST_RETRY) as tokens:
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
    assert [r.status for r in idp.requests] == [429, None, None, 200]


async def test_retry_after_is_honoured(idp):
    """A 429 with Retry-After: 1 delays the next attempt by at least one second."""
    idp.inject(Fault(status=429, headers={"Retry-After": "1"}))
    retry = RetryPolicy(initial_wait=0.0, max_wait=0.0, total_timeout=5)
    async with TokenManager(retry=retry) as tokens:
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
    first, second = idp.requests
    assert second.time - first.time >= 0.99


async def test_retries_are_bounded(idp, no_retry_wait):
    """A 5xx that never ends gives TokenEndpointUnavailable after the policy's attempts."""
    idp.inject(Fault(status=503), count=None)
    async with TokenManager(retry=RetryPolicy(attempts=3)) as tokens:
        tokens.register("acme", creds(idp))
        with pytest.raises(TokenEndpointUnavailable) as exc:
            await tokens.get_token("acme")
    assert idp.token_requests == 3
    assert exc.value.attempts == 3
    assert exc.value.status_code == 503


async def test_invalid_client_is_not_retried(idp, no_retry_wait):
    """invalid_client maps to TokenRequestRefused(401) after one request, secret unmentioned."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp, auth=ClientSecretBasic("wrong-secret-xyz")))
        with pytest.raises(TokenRequestRefused) as exc:
            await tokens.get_token("acme")
        assert idp.token_requests == 1
        assert exc.value.error == "invalid_client"
        assert exc.value.status_code == 401
        assert "wrong-secret-xyz" not in str(exc.value)
        assert "wrong-secret-xyz" not in repr(exc.value)
        # The refusal is remembered for a cooldown: the IdP is not asked again at once.
        with pytest.raises(TokenRequestRefused):
            await tokens.get_token("acme")
        assert idp.token_requests == 1
        assert tokens.stats().total.failures == 1


async def test_register_replaces_credentials_and_forgets_failure(idp):
    """Registering corrected credentials clears the remembered refusal at once."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp, auth=ClientSecretBasic("wrong")))
        with pytest.raises(TokenRequestRefused):
            await tokens.get_token("acme")
        tokens.register("acme", creds(idp))
        assert (await tokens.get_token("acme")).access_token
        assert idp.token_requests == 2


# -- limits ----------------------------------------------------------------------------


async def test_fetch_concurrency_is_bounded():
    """max_concurrent_fetches=5 keeps at most 5 token requests in flight for 100 cold tenants."""
    # One provider may take every place here; by default it would get half of them.
    transport = CountingTransport()
    async with (
        IdentityProvider(latency=0.05) as idp,
        httpx.AsyncClient(transport=transport) as http,
    ):
        async with TokenManager(
            http_client=http, max_concurrent_fetches=5, max_fetches_per_origin=5
        ) as tokens:
            for n in range(100):
                idp.add_client(f"c{n}", SECRET)
                tokens.register(f"t{n}", creds(idp, f"c{n}"))
            await gather_tokens(tokens, [f"t{n}" for n in range(100)])
        assert not http.is_closed  # the caller's client is the caller's to close
        assert idp.token_requests == 100
        assert transport.peak == 5


async def test_one_connection_pool():
    """200 cold tenants open no more IdP connections than the pool limit of 4."""
    async with IdentityProvider() as idp:
        async with TokenManager(limits=httpx.Limits(max_connections=4)) as tokens:
            for n in range(200):
                idp.add_client(f"c{n}", SECRET)
                tokens.register(f"t{n}", creds(idp, f"c{n}"))
            await gather_tokens(tokens, [f"t{n}" for n in range(200)])
        assert idp.token_requests == 200
        assert 1 <= idp.connections <= 4


# -- shutdown --------------------------------------------------------------------------


async def test_get_token_after_close_raises(idp):
    """get_token after leaving `async with` raises ManagerClosedError, even for a cold key."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
    with pytest.raises(ManagerClosedError):
        await tokens.get_token("acme")
    with pytest.raises(ManagerClosedError):
        await tokens.get_token("acme", scopes=("x",))


async def test_errors_leave_the_block_unwrapped(idp):
    """A TokenError (or any error) escaping `async with TokenManager()` is not an ExceptionGroup."""
    with pytest.raises(UnknownTenantError):
        async with TokenManager() as tokens:
            await tokens.get_token("ghost")
    tokens = TokenManager()

    async def use_then_fail() -> None:
        async with tokens:
            tokens.register("acme", creds(idp))
            await tokens.get_token("acme")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await use_then_fail()
    with pytest.raises(ManagerClosedError):
        await tokens.get_token("acme")


async def test_close_releases_waiters_and_cancels_fetches(idp):
    """Callers waiting on a fetch when the manager closes get ManagerClosedError, not a hang."""
    idp.inject(Fault(delay=30))
    errors: list[BaseException] = []

    async def waiter(tokens: TokenManager) -> None:
        try:
            await tokens.get_token("acme")
        except ManagerClosedError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, TokenManager() as tokens:
            tokens.register("acme", creds(idp))
            for _ in range(10):
                tg.start_soon(waiter, tokens)
            await wait_until(lambda: idp.token_requests == 1 and tokens.stats().in_flight > 0)
    assert len(errors) == 10
    assert tokens.stats().in_flight == 0


async def test_close_cancels_background_refresh():
    """Leaving `async with` while a slow refresh is in flight returns promptly and cleanly."""
    async with IdentityProvider(token_lifetime=1) as idp:
        idp.add_client("acme", SECRET)
        with anyio.fail_after(5):
            async with TokenManager() as tokens:
                tokens.register("acme", creds(idp))
                await tokens.get_token("acme")
                idp.inject(Fault(delay=30))
                await tokens.get_token("acme")  # used since fetch: worth refreshing
                await wait_until(lambda: idp.token_requests == 2)
                assert tokens.stats().in_flight == 1
        assert tokens.stats().in_flight == 0
        assert tokens.stats().total.refreshes == 0


# -- resolver --------------------------------------------------------------------------


async def test_resolver_called_once_per_unknown_tenant(idp):
    """100 concurrent callers of an unknown tenant cause one resolver call and one request."""
    calls: list[str] = []

    async def resolver(tenant: str) -> ClientCredentials | None:
        calls.append(tenant)
        await anyio.sleep(0.01)
        return creds(idp)

    async with TokenManager(resolver=resolver) as tokens:
        results = await gather_tokens(tokens, ["x"] * 100 + ["y"] * 100)
    assert sorted(calls) == ["x", "y"]
    assert idp.token_requests == 2
    assert len({t.access_token for t in results}) == 2


async def test_resolver_errors_are_typed(idp):
    """A raising resolver gives TenantResolutionError; None gives UnknownTenantError."""

    async def resolver(tenant: str) -> ClientCredentials | None:
        if tenant == "boom":
            raise RuntimeError("database down")
        if tenant == "odd":
            return "not credentials"  # type: ignore[return-value]
        return None

    async with TokenManager(resolver=resolver) as tokens:
        with pytest.raises(TenantResolutionError) as exc:
            await tokens.get_token("boom")
        assert "database down" not in str(exc.value)  # the resolver's message may hold secrets
        with pytest.raises(TenantResolutionError):
            await tokens.get_token("odd")
        with pytest.raises(UnknownTenantError):
            await tokens.get_token("ghost")
    assert idp.token_requests == 0


async def test_resolver_error_keeps_its_cause():
    """The resolver's own exception stays reachable as __cause__ of TenantResolutionError."""

    async def resolver(tenant: str) -> ClientCredentials | None:
        raise RuntimeError("database down")

    async with TokenManager(resolver=resolver) as tokens:
        with pytest.raises(TenantResolutionError) as exc:
            await tokens.get_token("boom")
    assert isinstance(exc.value.__cause__, RuntimeError)


async def test_unknown_tenant_without_resolver(idp):
    """An unregistered tenant with no resolver is an UnknownTenantError, also a LookupError."""
    async with TokenManager() as tokens:
        with pytest.raises(LookupError) as exc:
            await tokens.get_token("ghost")
        assert isinstance(exc.value, UnknownTenantError)
        assert isinstance(exc.value, ConfigurationError)
        tokens.register("acme", creds(idp))
        tokens.unregister("acme")
        with pytest.raises(UnknownTenantError):
            await tokens.get_token("acme")


# -- statistics, invalidation, isolation -----------------------------------------------


async def test_stats_snapshot(idp):
    """stats() counts hits, misses, fetches per key and in total, as a frozen snapshot."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        await tokens.get_token("acme")
        await tokens.get_token("acme")
        snapshot = tokens.stats()
        await tokens.get_token("acme")
        assert tokens.invalidate("acme")
        assert not tokens.invalidate("acme")
        await tokens.get_token("acme")
        after = tokens.stats()
    expected = KeyStatistics(hits=2, misses=1, fetches=1)
    assert snapshot.total == expected
    assert snapshot.slots == 1
    assert snapshot.tenants == 1
    assert snapshot.evictions == 0
    assert snapshot.in_flight == 0
    (key,) = snapshot.keys
    assert key.tenant == "acme"
    assert snapshot.keys[key] == expected
    assert after.total == KeyStatistics(hits=3, misses=2, fetches=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.slots = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.total.hits = 5  # type: ignore[misc]
    assert "tenants=1" in repr(tokens)


async def test_invalidate_only_the_given_token(idp):
    """invalidate(token=old) does nothing once the slot holds a newer token."""
    async with TokenManager() as tokens:
        tokens.register("acme", creds(idp))
        old = await tokens.get_token("acme")
        assert tokens.invalidate("acme", token=old)
        new = await tokens.get_token("acme")
        assert not tokens.invalidate("acme", token=old)
        assert await tokens.get_token("acme") is new
        assert idp.token_requests == 2


async def test_bad_tenant_does_not_break_others(idp, no_retry_wait):
    """A tenant whose IdP is unreachable fails alone; a good tenant works concurrently."""
    outcomes: dict[str, object] = {}

    async with TokenManager() as tokens:
        tokens.register(
            "bad",
            ClientCredentials(
                token_url=closed_port_url(), client_id="bad", auth=ClientSecretBasic(SECRET)
            ),
        )
        tokens.register("good", creds(idp))

        async def one(tenant: str) -> None:
            try:
                outcomes[tenant] = await tokens.get_token(tenant)
            except TokenError as exc:
                outcomes[tenant] = exc

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "bad")
                tg.start_soon(one, "good")
    assert isinstance(outcomes["bad"], TokenEndpointUnavailable)
    assert SECRET not in str(outcomes["bad"])
    assert isinstance(outcomes["good"], Token)
    assert idp.token_requests == 1


async def test_every_attribute_exists_from_init_on(idp):
    """`async with` adds no attribute: a new manager's `dpop_nonces` and stats work at once."""

    def ours(obj: object) -> set[str]:  # anyio's mixin keeps its own while entered
        return {name for name in vars(obj) if not name.startswith("_AsyncContextManager")}

    manager = TokenManager()
    before = ours(manager)
    assert manager.dpop_nonces.get(idp.token_url) is None
    assert manager.stats().slots == 0
    assert "stopped" in repr(manager)
    async with manager as tokens:
        tokens.register("acme", creds(idp))
        await tokens.get_token("acme")
        assert ours(tokens) == before
    assert ours(manager) == before


async def test_token_remaining_and_wall_clock_expiry(tokens):
    """A fresh token reports the seconds it has left and its expiry on the wall clock."""
    import time

    token = await tokens.get_token("acme")
    left = token.remaining()
    assert 0 < left <= token.expires_in
    assert abs(token.expires_at_wall - (time.time() + left)) < 60  # same moment, two clocks


async def test_repr_counts_slots_not_key_spellings(idp):
    """repr() and stats() agree on the number of slots when a key has two spellings."""
    secret = idp.clients["acme"].secret
    creds = ClientCredentials(
        token_url=idp.token_url, client_id="acme", auth=ClientSecretBasic(secret), audience="api"
    )
    async with TokenManager() as tokens:
        tokens.register("acme", creds)
        await tokens.get_token("acme")
        await tokens.get_token("acme", audience="api")  # the same slot, spelled out
        assert tokens.stats().slots == 1
        assert "slots=1>" in repr(tokens)
