"""What a key may do on the data plane (gateway/access.py): pure checks on the principal and
the endpoint's Traffic, each refusal naming what was missing."""

from __future__ import annotations

import time
from types import MappingProxyType

import pytest

from modelport.core.errors import Forbidden, Unauthorized
from modelport.core.routing import KeyPrincipal, Route, Traffic
from modelport.gateway import access


def _traffic(name: str, *consumers: str) -> Traffic:
    route = Route(name, "m", 1, b"{}", b"t")
    return Traffic(route, MappingProxyType({"r1": route}), consumers=frozenset(consumers))


ROUTES = {
    "mine": _traffic("mine", "project:crm"),
    "theirs": _traffic("theirs", "project:ads"),
    "team-wide": _traffic("team-wide", "project:ads", "team:sales"),
    "for-one-key": _traffic("for-one-key", "project:ads", "key:key_1"),
}


def test_consumers_admit_the_project_team_or_key() -> None:
    key = KeyPrincipal("key_1", "crm", "k", team="sales")
    assert set(access.visible(key, ROUTES)) == {"mine", "team-wide", "for-one-key"}
    other = KeyPrincipal("key_2", "crm", "k", team="support")
    assert set(access.visible(other, ROUTES)) == {"mine"}
    with pytest.raises(Forbidden) as refused:
        access.check_endpoint(other, "theirs", ROUTES["theirs"])
    assert "its consumers are project:ads" in refused.value.message
    assert refused.value.details["endpoint"] == "theirs"


def test_scope_narrows_what_the_project_may_call() -> None:
    key = KeyPrincipal("key_1", "crm", "k", team="sales", scopes=frozenset({"team-wide"}))
    assert set(access.visible(key, ROUTES)) == {"team-wide"}
    with pytest.raises(Forbidden, match="scoped to endpoints team-wide: endpoint 'mine'"):
        access.check_endpoint(key, "mine", ROUTES["mine"])


def test_pin_and_customers_are_privileges() -> None:
    plain = KeyPrincipal("key_1", "crm", "k", customers=frozenset({"acme"}))
    with pytest.raises(Forbidden, match="'pin' permission") as refused:
        access.check_pin(plain, "mine")
    assert refused.value.details["permission"] == "pin"
    access.check_customer(plain, "acme", "user")
    with pytest.raises(Forbidden) as refused:
        access.check_customer(plain, "globex", "X-Modelport-Customer")
    assert refused.value.details["param"] == "X-Modelport-Customer"
    anyone = KeyPrincipal("key_1", "crm", "k", can_pin=True, customers=frozenset({"*"}))
    access.check_pin(anyone, "mine")
    access.check_customer(anyone, "globex", "user")


def test_an_expired_key_is_a_401_naming_when() -> None:
    access.check_live(KeyPrincipal("key_1", "crm", "k", expires_at=time.time() + 60))
    with pytest.raises(Unauthorized, match=r"API key 'key_1' expired at 2001-09-09T01:46:40"):
        access.check_live(KeyPrincipal("key_1", "crm", "k", expires_at=1e9))
