"""The limits table and service on SQLite and PostgreSQL: set, replace, list (with intent
limits merged tightest per field), delete, and bad input that stores nothing."""

from __future__ import annotations

import pytest

from modelport.control import limits as service
from modelport.core.errors import InvalidRequest, NotFound
from modelport.governance.rate_limits import Limit
from modelport.store import Database
from modelport.store.identity_tables import ProjectRow


def test_set_replace_list_and_delete(db: Database) -> None:
    with db.session() as session:
        session.add(ProjectRow(name="shop", team="default"))
    with db.session() as session:
        before, after = service.set_limit(
            session, "project", "shop", rpm=10, tpm=None, concurrency=2, actor="admin"
        )
        assert before is None and (after.rpm, after.concurrency) == (10, 2)
    with db.session() as session:
        before, after = service.set_limit(
            session, "project", "shop", rpm=None, tpm=500, concurrency=None, actor="ops"
        )
        assert before is not None and before.rpm == 10
        assert (after.rpm, after.tpm, after.updated_by) == (None, 500, "ops")
        service.set_limit(
            session, "customer", "acme", rpm=3, tpm=None, concurrency=None, actor="admin"
        )
    with db.session() as session:
        listed = service.list_limits(session)
        assert [(x.kind, x.name) for x in listed] == [("project", "shop"), ("customer", "acme")]
        table = service.table_of(listed)
        assert table.limits[("project", "shop")] == Limit(tpm=500)
        assert [x.name for x in service.list_limits(session, "customer")] == ["acme"]
    with db.session() as session:
        assert service.delete_limit(session, "customer", "acme").rpm == 3
    with db.session() as session, pytest.raises(NotFound):
        service.delete_limit(session, "customer", "acme")


@pytest.mark.parametrize(
    ("kind", "name", "values", "field"),
    [
        ("planet", "x", {"rpm": 1}, "kind"),
        ("customer", "acme", {"rpm": 0}, "rpm"),
        ("customer", "acme", {"tpm": -5}, "tpm"),
        ("customer", "acme", {"concurrency": True}, "concurrency"),
        ("customer", "acme", {"rpm": 2**31}, "rpm"),
        ("customer", "acme", {}, "rpm"),
        ("customer", "", {"rpm": 1}, "name"),
        ("customer", "x" * 141, {"rpm": 1}, "name"),
        ("project", "nope", {"rpm": 1}, "name"),
        ("key", "key_nope", {"rpm": 1}, "name"),
        ("team", "nope", {"rpm": 1}, "name"),
        ("endpoint", "nope", {"rpm": 1}, "name"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    db: Database, kind: str, name: str, values: dict[str, object], field: str
) -> None:
    arguments = {"rpm": None, "tpm": None, "concurrency": None, **values}
    with pytest.raises((InvalidRequest, NotFound)) as refused, db.session() as session:
        service.set_limit(session, kind, name, **arguments, actor="admin")  # type: ignore[arg-type]
    assert refused.value.details.get("field") == field
    with db.session() as session:
        assert service.list_limits(session) == []


def test_intent_limits_merge_tightest_per_field() -> None:
    listed = [
        service.LimitPublic(
            kind="endpoint", name="chat", rpm=100, tpm=None, concurrency=4, source="api"
        ),
        service.LimitPublic(
            kind="endpoint", name="chat", rpm=10, tpm=1000, concurrency=None, source="intent"
        ),
    ]
    assert service.table_of(listed).limits[("endpoint", "chat")] == Limit(10, 1000, 4)
