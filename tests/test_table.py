"""SlotTable's tenant rules, without I/O: credentials, resolved tenants, slots."""

from __future__ import annotations

from tokenflight import ClientCredentials, ClientSecretBasic
from tokenflight._slot import SlotKey
from tokenflight._table import SlotTable

CREDS = ClientCredentials(
    token_url="https://idp.example/t", client_id="a", auth=ClientSecretBasic("s")
)
NEW = ClientCredentials(
    token_url="https://idp.example/t", client_id="a", auth=ClientSecretBasic("s2")
)


def key(tenant: str, audience: str | None = None) -> SlotKey:
    return SlotKey(tenant, audience, None, None)


def test_a_resolved_tenant_leaves_with_its_last_slot():
    """A resolver-made tenant is forgotten when its last slot goes; a registered one stays."""
    table = SlotTable()
    table.set_tenant("resolved", CREDS, resolved_at=1.0)
    table.set_tenant("registered", CREDS)
    first, _ = table.add(key("resolved"), CREDS)
    second, _ = table.add(key("resolved", "api"), CREDS)
    mine, _ = table.add(key("registered"), CREDS)
    assert not table.remove(first)
    assert "resolved" in table.credentials  # one slot left
    assert table.remove(second)
    assert "resolved" not in table.credentials
    assert "resolved" not in table.resolved_at
    assert table.remove(mine)
    assert table.credentials["registered"] is CREDS


def test_new_credentials_reach_the_tenants_slots():
    """set_tenant gives every slot of the tenant the new credentials (tokens are kept)."""
    table = SlotTable()
    table.set_tenant("t", CREDS, resolved_at=1.0)
    slot, _ = table.add(key("t"), CREDS)
    table.set_tenant("t", NEW, resolved_at=2.0)
    assert slot.creds is NEW
    assert table.resolved_at["t"] == 2.0


def test_registering_makes_a_tenant_stay_and_drop_forgets_it():
    """Registering a resolved tenant clears its resolution; drop_tenant forgets it all."""
    table = SlotTable()
    table.set_tenant("t", CREDS, resolved_at=1.0)
    table.set_tenant("t", NEW)
    assert "t" not in table.resolved_at
    slot, _ = table.add(key("t"), NEW)
    assert table.drop_tenant("t") == [slot]
    assert "t" not in table.credentials
