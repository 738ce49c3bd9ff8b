"""Registry and endpoint services against a real (SQLite) database."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.control import endpoints, keys, registry
from modelport.control.schemas import KeyCreate
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.names import parse_model_ref
from modelport.demo import build_demo
from modelport.governance import hash_secret
from modelport.store import ArtifactStore, Database


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("demo")).model


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def _register(db: Database, store: ArtifactStore, model_file: Path, name: str = "m") -> int:
    digest = store.ingest(model_file).digest
    with db.session() as session:
        if name not in [m.name for m in registry.list_models(session)]:
            registry.create_model(session, name=name, task="tabular")
        return registry.create_version(
            session, store, model=name, runtime="onnx", artifact_digest=digest
        ).version


def test_versions_are_numbered_and_signature_derived(db, store, demo_model) -> None:
    assert [_register(db, store, demo_model) for _ in range(3)] == [1, 2, 3]
    with db.session() as session:
        public = registry.model_public(registry.get_model(session, "m"))
    assert [v.version for v in public.versions] == [1, 2, 3]
    spec = public.versions[0].signature.inputs[0]
    assert (spec.name, spec.datatype, spec.shape) == ("input", "FP32", [-1, 30])


def test_aliases_move_and_resolve(db, store, demo_model) -> None:
    _register(db, store, demo_model)
    _register(db, store, demo_model)
    with db.session() as session:
        registry.set_alias(session, model="m", alias="champion", version=1)
        assert registry.resolve(session, parse_model_ref("m@champion")).version == 1
        registry.set_alias(session, model="m", alias="champion", version=2)
        assert registry.resolve(session, parse_model_ref("m@champion")).version == 2
        assert registry.resolve(session, parse_model_ref("m")).version == 2
        assert registry.resolve(session, parse_model_ref("m:1")).version == 1
        with pytest.raises(NotFound, match="no alias 'stable'"):
            registry.resolve(session, parse_model_ref("m@stable"))
        with pytest.raises(NotFound, match="no version 9"):
            registry.set_alias(session, model="m", alias="x", version=9)


def test_unknown_runtime_writes_no_version(db, store, demo_model) -> None:
    digest = store.ingest(demo_model).digest
    with db.session() as session:
        registry.create_model(session, name="m", task="tabular")
    with pytest.raises(InvalidRequest, match="unknown runtime"), db.session() as session:
        registry.create_version(session, store, model="m", runtime="nope", artifact_digest=digest)
    with db.session() as session:
        assert registry.get_model(session, "m").versions == []


def test_in_use_versions_and_models_cannot_be_deleted(db, store, demo_model) -> None:
    _register(db, store, demo_model)
    _register(db, store, demo_model)
    with db.session() as session:
        registry.set_alias(session, model="m", alias="champion", version=1)
        endpoints.create_endpoint(session, name="ep", model="m@champion", replicas=1)
    with pytest.raises(Conflict, match="in use by endpoint"), db.session() as session:
        registry.delete_version(session, "m", 1)
    with pytest.raises(Conflict) as info, db.session() as session:
        registry.delete_model(session, "m")
    assert info.value.details == {"endpoints": ["ep"]}
    with db.session() as session:
        registry.delete_version(session, "m", 2)  # unused: fine
        endpoints.delete_endpoint(session, "ep")
    with db.session() as session:
        registry.delete_model(session, "m")
        assert registry.list_models(session) == []


def test_endpoint_names_are_unique_and_checked(db, store, demo_model) -> None:
    _register(db, store, demo_model)
    with db.session() as session:
        endpoints.create_endpoint(session, name="ep", model="m:1", replicas=1)
    with pytest.raises(Conflict), db.session() as session:
        endpoints.create_endpoint(session, name="ep", model="m:1", replicas=1)
    with pytest.raises(InvalidRequest, match="invalid endpoint name"), db.session() as session:
        endpoints.create_endpoint(session, name="EP 1", model="m:1", replicas=1)
    with pytest.raises(InvalidRequest, match="version after ':'"), db.session() as session:
        endpoints.create_endpoint(session, name="ep2", model="m:zero", replicas=1)


def test_keys_are_stored_hashed_and_revocable(db) -> None:
    with db.session() as session:
        row, key = keys.create_key(session, KeyCreate(project="default", name="ci"))
        key_id = row.id
    assert key.startswith("mp_") and row.prefix == key[:11]
    with db.session() as session:
        active = keys.active_keys(session)
        stored = keys.list_keys(session)[0]
    assert stored.key_hash == hash_secret(key) and key not in stored.key_hash
    assert active[hash_secret(key)].project == "default"
    with db.session() as session:
        keys.revoke_key(session, key_id)
    with db.session() as session:
        assert keys.active_keys(session) == {}
        with pytest.raises(NotFound):
            keys.revoke_key(session, "key_missing")


def test_existing_endpoints_become_revision_one(tmp_path: Path) -> None:
    """Migration 0003 on a database with an endpoint made before revisions existed."""
    from alembic import command
    from alembic.config import Config

    from modelport.store import db as db_module

    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(db_module._MIGRATIONS))
    config.attributes["engine"] = database.engine
    command.upgrade(config, "0002")
    with database.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO models (id, name, task, description, owner, created_at) "
            "VALUES (1, 'm', 'tabular', '', '', '2026-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO model_versions (id, model_id, version, runtime, artifact_digest, "
            "signature, metrics, tags, runtime_options, created_by, created_at) VALUES "
            "(1, 1, 1, 'onnx', 'sha256:x', '{}', '{}', '{}', '{}', '', '2026-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO endpoints (id, name, model_ref, version_id, replicas, batching, "
            "created_at) VALUES (1, 'ep', 'm:1', 1, 2, NULL, '2026-01-01')"
        )
    database.migrate()
    with database.session() as session:
        row = endpoints.get_endpoint(session, "ep")
        revision = endpoints.get_revision(session, row, 1)
        assert (row.stable_revision, revision.label, revision.replicas) == (1, "r1", 2)
        assert revision.version.version == 1 and revision.runtime_options == {}
        with pytest.raises(NotFound, match="has no revision r2"):
            endpoints.get_revision(session, row, 2)
    database.close()
