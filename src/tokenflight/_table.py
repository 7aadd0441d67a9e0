"""The slot table: tenants' credentials, every key spelling that maps to a slot, and each
tenant's slots.

Synchronous and I/O-free: the manager decides what to fetch; this only files tenants and
slots, and keeps the rule that a resolver-made tenant leaves with its last slot.
A key can be spelled with its defaults left out (`audience=None`) or written out; both
spellings map to one slot, so the table keeps each slot's aliases to remove them all.
"""

from __future__ import annotations

import heapq
from typing import final

from ._config import ClientCredentials, normalize_resource, normalize_scopes
from ._endpoint import TokenRequest
from ._slot import LookupKey, Slot, SlotKey

__all__ = ["SlotTable"]


@final
class SlotTable:
    """Tenants' credentials; slots by key spelling, by tenant, and each tenant's default."""

    __slots__ = ("_count", "by_key", "credentials", "defaults", "per_tenant", "resolved_at")

    def __init__(self) -> None:
        self.credentials: dict[str, ClientCredentials] = {}
        self.resolved_at: dict[str, float] = {}  # resolver-made tenants: when resolved
        self.by_key: dict[LookupKey, Slot] = {}  # SlotKeys; found by plain tuples too
        self.defaults: dict[str, Slot] = {}  # tenant -> slot of its default key
        self.per_tenant: dict[str, list[Slot]] = {}
        self._count = 0

    def set_tenant(
        self, tenant: str, creds: ClientCredentials, *, resolved_at: float | None = None
    ) -> None:
        """File a tenant's credentials: registered (`resolved_at` None) or resolved then."""
        self.credentials[tenant] = creds
        if resolved_at is None:
            self.resolved_at.pop(tenant, None)
        else:
            self.resolved_at[tenant] = resolved_at
        for slot in self.per_tenant.get(tenant, ()):
            slot.creds = creds  # their next fetch uses them; their tokens stay good

    def drop_tenant(self, tenant: str) -> list[Slot]:
        """Forget a tenant's credentials; its slots, to be evicted by the caller."""
        self.credentials.pop(tenant, None)
        self.resolved_at.pop(tenant, None)
        return self.of_tenant(tenant)

    def __len__(self) -> int:
        """How many slots (not key spellings) the table holds."""
        return self._count

    def find(
        self,
        tenant: str,
        audience: str | None,
        resource: str | tuple[str, ...] | list[str] | None,
        scopes: str | tuple[str, ...] | list[str] | frozenset[str] | None,
    ) -> Slot | None:
        """The slot of a key as a caller spells it, if there is one."""
        return self.by_key.get(
            SlotKey(
                tenant,
                audience,
                None if resource is None else normalize_resource(resource),
                None if scopes is None else normalize_scopes(scopes),
            )
        )

    def add(self, key: SlotKey, creds: ClientCredentials) -> tuple[Slot, bool]:
        """The slot of `key` with the credentials' defaults filled in, made if needed.

        Returns the slot and whether it is new.
        """
        resource = key.resource if key.resource is not None else creds.resource
        request = TokenRequest(
            scopes=tuple(sorted(key.scopes)) if key.scopes is not None else tuple(creds.scopes),
            audience=key.audience if key.audience is not None else creds.audience,
            resource=normalize_resource(resource),
        )
        canonical = SlotKey(
            key.tenant, request.audience, request.resource, frozenset(request.scopes)
        )
        slot = self.by_key.get(canonical)
        new = slot is None
        if slot is None:
            slot = Slot(key=canonical, creds=creds, request=request)
            self._alias(canonical, slot)
            self.per_tenant.setdefault(key.tenant, []).append(slot)
            self._count += 1
        if key not in slot.aliases:  # the caller's spelling, defaults left out
            self._alias(key, slot)
        if key.audience is None and key.resource is None and key.scopes is None:
            self.defaults[key.tenant] = slot
        return slot, new

    def _alias(self, key: SlotKey, slot: Slot) -> None:
        self.by_key[key] = slot
        slot.aliases.append(key)

    def remove(self, slot: Slot) -> bool:
        """Take a slot out under every spelling; True when its tenant has no slot left.

        A resolver-made tenant leaves with its last slot (it comes back through the
        resolver); a registered one stays.
        """
        tenant = slot.key.tenant
        for alias in slot.aliases:
            if self.by_key.get(alias) is slot:
                del self.by_key[alias]
        if self.defaults.get(tenant) is slot:
            del self.defaults[tenant]
        siblings = self.per_tenant.get(tenant, [])
        if slot in siblings:
            siblings.remove(slot)
            self._count -= 1
        if siblings:
            return False
        self.per_tenant.pop(tenant, None)
        if self.resolved_at.pop(tenant, None) is not None:
            self.credentials.pop(tenant, None)
        return True

    def of_tenant(self, tenant: str) -> list[Slot]:
        """A tenant's slots (a copy)."""
        return list(self.per_tenant.get(tenant, ()))

    def unique(self) -> list[Slot]:
        """Every slot once."""
        return [slot for slots in self.per_tenant.values() for slot in slots]

    def least_recently_used(self, count: int, *, keep: Slot | None = None) -> list[Slot]:
        """Up to `count` slots to evict for the cap, least recently used first.

        Slots nobody asked for since their last idle check come first, each group by
        when a check last found it used (`Slot.recency`); slots with a fetch in flight
        (callers wait on them) and `keep` are never chosen. One pass over the table.
        """
        candidates = (
            slot
            for slots in self.per_tenant.values()
            for slot in slots
            if slot.flight is None and slot is not keep
        )
        return heapq.nsmallest(count, candidates, key=Slot.recency)

    def clear(self) -> None:
        """Forget every slot (the tenants' credentials stay)."""
        self.by_key.clear()
        self.defaults.clear()
        self.per_tenant.clear()
        self._count = 0
