"""The key service on SQLite and PostgreSQL: create with scopes, expiry, permissions and
customers; bad input stores nothing; rotation; what the gateway is handed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelport.control import keys
from modelport.control.schemas import KeyCreate
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.governance import hash_secret
from modelport.store import Database


def test_a_scoped_key_reaches_the_gateway_with_its_privileges(db: Database) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    body = KeyCreate(
        project="default",
        name="ci",
        scopes=["fraud", "fraud"],
        expires_at=expires,
        permissions=["pin", "any_customer"],
        customers=["acme"],
    )
    with db.session() as session:
        row, secret = keys.create_key(session, body, created_by="alice")
        key_id = row.id
    with db.session() as session:
        public = keys.key_public(keys.get_key(session, key_id))
        principal = keys.active_keys(session)[hash_secret(secret)]
    assert (public.team, public.created_by, public.scopes) == ("default", "alice", ["fraud"])
    assert principal.scopes == {"fraud"} and principal.can_pin
    assert not principal.can_route_by_header
    assert principal.customers == {"acme", "*"}
    assert principal.expires_at == pytest.approx(expires.timestamp(), abs=1e-3)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"project": "nope"}, "project"),
        ({"permissions": ["root"]}, "permissions"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at"),
        ({"scopes": ["Not A Name"]}, "scopes"),
        ({"customers": [""]}, "customers"),
        ({"team": "other"}, "team"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    db: Database, fields: dict[str, object], field: str
) -> None:
    body = KeyCreate.model_validate({"project": "default", "name": "bad", **fields})
    with pytest.raises((InvalidRequest, NotFound)) as refused, db.session() as session:
        keys.create_key(session, body)
    assert refused.value.details["field"] == field
    with db.session() as session:
        assert keys.list_keys(session) == []


def test_rotation_hands_over_the_settings_and_ends_the_old_key(db: Database) -> None:
    body = KeyCreate(
        project="default",
        name="svc",
        scopes=["fraud"],
        permissions=["pin"],
        expires_at=datetime.now(UTC) + timedelta(days=10),
    )
    with db.session() as session:
        old, _ = keys.create_key(session, body)
        old_id = old.id
    with db.session() as session:
        before, new, secret = keys.rotate_key(session, old_id, grace_s=60)
        new_id = new.id
        assert before.replaced_by == new_id and new.rotated_from == old_id
    with db.session() as session:
        old_row, new_row = keys.get_key(session, old_id), keys.get_key(session, new_id)
        assert old_row.expires_at is not None and new_row.expires_at is not None
        assert old_row.expires_at <= datetime.now(UTC) + timedelta(seconds=61)
        # The same lifetime, counted from now.
        assert new_row.expires_at > datetime.now(UTC) + timedelta(days=9.9)
        assert (new_row.scopes, new_row.permissions) == (["fraud"], ["pin"])
        assert keys.active_keys(session)[hash_secret(secret)].key_id == new_id
        with pytest.raises(Conflict):
            keys.rotate_key(session, old_id, grace_s=0)
        keys.revoke_key(session, new_id)
    with db.session() as session, pytest.raises(Conflict):
        keys.rotate_key(session, new_id, grace_s=0)
    with db.session() as session:
        assert [k.id for k in keys.list_keys(session, project="default")] == [old_id, new_id]
        assert keys.list_keys(session, project="other") == []
