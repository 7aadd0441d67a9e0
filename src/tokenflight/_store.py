"""Where tokens are shared beyond one manager: the store protocol.

The manager keeps every token in process memory (the fast path never leaves it). A store
is asked only on a local miss or a due refresh, so that a fleet of processes can share
tokens and make one token request per key between them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ._slot import Slot
from ._token import Token

__all__ = ["TokenStore", "fetch_from", "store_key"]


@runtime_checkable
class TokenStore(Protocol):
    """A token store shared by several managers (processes).

    `fetch` returns a token for `key` that stays usable for at least `min_ttl` seconds
    and is not `current` (the token the caller already holds, or None): one found in the
    store, or the result of calling `fetch_new()` (which asks the token endpoint) while
    holding the store's lock for that key, then saved. A store that cannot reach its
    backend must fall back to calling `fetch_new()` itself.

    A `fetch` may also take `deadline=`: the loop time (`anyio.current_time()`) by which
    the manager needs the token, its fetch budget (`RetryPolicy.total_timeout`). A store
    that waits for another process's fetch should stop waiting early enough to call
    `fetch_new()` itself before it. The manager passes it only to a `fetch` that takes
    it, so it is not part of this protocol's type: stores written before it existed
    match as they are.
    """

    async def fetch(
        self,
        key: str,
        fetch_new: Callable[[], Awaitable[Token]],
        *,
        min_ttl: float,
        current: Token | None,
    ) -> Token: ...

    async def invalidate(self, key: str, access_token: str) -> None:
        """Forget `access_token` under `key`, if it is still the stored one."""

    async def aclose(self) -> None:
        """Release the store's connections."""


async def fetch_from(
    store: TokenStore,
    key: str,
    fetch_new: Callable[[], Awaitable[Token]],
    *,
    current: Token | None,
    deadline: float,
) -> Token:
    """`store.fetch(...)` of a token for any `min_ttl`, with `deadline` if it takes one."""
    if _takes_deadline(type(store)):
        fetch: Callable[..., Awaitable[Token]] = store.fetch  # deadline= is off the protocol
        return await fetch(key, fetch_new, min_ttl=0.0, current=current, deadline=deadline)
    return await store.fetch(key, fetch_new, min_ttl=0.0, current=current)


@functools.cache
def _takes_deadline(store_type: type[TokenStore]) -> bool:
    """Whether a store class's `fetch` accepts `deadline=` (by name or `**kwargs`)."""
    try:
        parameters = inspect.signature(store_type.fetch).parameters.values()
    except (TypeError, ValueError):  # no signature to read: do not guess
        return False
    return any(p.name == "deadline" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def store_key(slot: Slot) -> str:
    """A stable name for a slot's token in a shared store, holding no secret.

    Built from what the token endpoint sees (URL, client id, audience, resource, scopes),
    not the local tenant name, so that processes naming a tenant differently still share.
    """
    request = slot.request
    resource = request.resource
    parts = [
        slot.creds.token_url or slot.creds.issuer or "",
        slot.creds.client_id,
        request.audience or "",
        resource if isinstance(resource, str) else " ".join(resource or ()),
        " ".join(sorted(request.scopes)),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
