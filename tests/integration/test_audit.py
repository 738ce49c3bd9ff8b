"""The audit log against a real server: control changes, automatic rollout moves and denied
calls are recorded with who, what, where from and which request; altering, inserting or
deleting one stored entry (SQLite and PostgreSQL) or cutting the tail makes
``modelport audit verify`` fail naming it."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError
from tests.postgres import new_database

from .conftest import RunningServer, start_server, stop_server, wait_for

pytestmark = pytest.mark.integration

runner = CliRunner()

GOOD = """
class Scorer:
    def predict(self, inputs):
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
ENV = {
    "MODELPORT_ROLLOUT_TICK_S": "0.1",
    "MODELPORT_AUDIT_ANCHOR_INTERVAL_S": "0.3",
}


def intent(version: int, rollout: str) -> str:
    return f"""\
endpoint: audited
project: default
task: custom
model: audited:{version}
outcome: prove that every change is on record
rollout:
  {rollout}
"""


def register(client: Client, root: Path, version: int) -> None:
    directory = root / f"v{version}"
    directory.mkdir()
    (directory / "model.py").write_text(GOOD)
    client.create_version(
        "audited",
        "python",
        artifact_path=str(directory),
        runtime_options={"class": "model:Scorer"},
        signature=SIGNATURE,
    )


def entries(client: Client, **filters: Any) -> list[dict[str, Any]]:
    return client.list_audit(limit=1000, **filters)


def cli(server: RunningServer, *args: str) -> Any:
    return runner.invoke(app, [*args, "--url", server.url, "--token", server.admin_token])


def head_anchored(server: RunningServer) -> int:
    path = server.home / "audit-anchors.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line)["seq"] for line in path.read_text().splitlines()), default=0)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("audit") / "home", env=ENV)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def admin(srv: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("audited")
    with srv.client() as client:
        client.create_model("audited", "custom")
        for version in (1, 2, 3):
            register(client, root, version)
        yield client


@pytest.fixture(scope="module")
def rolled_out(admin: Client) -> None:
    assert admin.apply(intent(1, "strategy: immediate"))["action"] == "created"
    admin.wait_ready("audited")
    # A canary with no traffic needed: the controller steps and promotes it by itself.
    canary = "strategy: canary\n  steps: [50, 100]\n  interval: 1s\n  min_requests: 0"
    assert admin.apply(intent(2, canary))["action"] == "rollout"
    assert admin.wait_rollout("audited", timeout=90)["state"] == "promoted"


def test_changes_are_recorded_with_actor_action_target_request_and_source(
    srv: RunningServer, admin: Client, rolled_out: None
) -> None:
    with httpx.Client(
        base_url=srv.url, headers={"authorization": f"Bearer {srv.admin_token}"}
    ) as http:
        reply = http.put(
            "/api/v1/secrets/upstream-token",
            json={"value": "s3cr3t-value"},
            headers={"x-request-id": "audit-req-1"},
        )
        assert reply.status_code == 204
    (secret,) = entries(admin, action="secrets.put")
    assert secret["actor"] == "admin" and secret["target"] == "secret:upstream-token"
    assert secret["request_id"] == "audit-req-1" and secret["source"] == "127.0.0.1"
    assert "s3cr3t" not in json.dumps(entries(admin))  # names only, never values

    models = entries(admin, action="models.")
    assert [e["action"] for e in models] == ["models.create", *["models.register"] * 3]
    assert [e["target"] for e in models][1:] == [f"model:audited:{v}" for v in (1, 2, 3)]
    assert all(e["after"] and len(e["after"]) == 64 for e in models)  # digests

    applied = entries(admin, action="endpoints.apply", target="endpoint:audited")
    assert len(applied) == 2 and all(e["actor"] == "admin" for e in applied)
    assert applied[0]["before"] == "" and applied[1]["before"] != applied[1]["after"]
    started = entries(admin, action="rollouts.start")
    assert len(started) == 1 and started[0]["actor"] == "admin"
    assert started[0]["details"]["revision"] == "r2"


def test_automatic_rollout_moves_are_recorded_as_system(admin: Client, rolled_out: None) -> None:
    moves = entries(admin, actor="system", target="endpoint:audited")
    actions = [e["action"] for e in moves]
    # v1 -> v2: a step at 50%, one at 100%, then the promotion after its window passed.
    assert actions[-2:] == ["rollouts.step", "rollouts.promote"], actions
    assert all(e["request_id"] == "" and e["source"] == "" for e in moves)
    assert moves[-1]["details"]["revision"] == "r2"


def test_manual_rollout_moves_are_recorded_with_their_actor(
    admin: Client, rolled_out: None
) -> None:
    canary = "strategy: canary\n  steps: [50, 100]\n  interval: 60s\n  min_requests: 0"
    admin.apply(intent(3, canary))
    wait_for(lambda: admin.rollout("audited")["state"] == "progressing", 90, "the step")
    admin.rollout_action("audited", "pause")
    admin.rollout_action("audited", "abort")
    manual = entries(admin, actor="admin", action="rollouts.")
    assert [e["action"] for e in manual][-2:] == ["rollouts.pause", "rollouts.abort"]


def test_a_denied_call_is_recorded(srv: RunningServer, admin: Client) -> None:
    reply = httpx.get(
        f"{srv.url}/api/v1/endpoints",
        headers={"authorization": "Bearer wrong-token", "x-request-id": "denied-req"},
    )
    assert reply.status_code == 401

    def found() -> list[dict[str, Any]]:
        return [
            e for e in entries(admin, action="access.denied") if e["request_id"] == "denied-req"
        ]

    wait_for(lambda: bool(found()), 10, "the denied call in the audit log")
    (denied,) = found()
    assert denied["outcome"] == "denied" and denied["source"] == "127.0.0.1"
    assert denied["details"]["reason"]


def test_list_export_and_verify_from_the_cli(srv: RunningServer, admin: Client) -> None:
    listed = cli(srv, "audit", "list", "--actor", "admin", "--action", "models.", "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output)
    assert found and {(e["actor"], e["action"][:7]) for e in found} == {("admin", "models.")}
    table = cli(srv, "audit", "list", "--since", "1h")
    assert table.exit_code == 0 and "admin" in table.output, table.output
    exported = cli(srv, "audit", "export")
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    verified = cli(srv, "audit", "verify")
    assert verified.exit_code == 0 and "ok" in verified.output, verified.output


def test_verify_checks_anchors_kept_elsewhere(
    srv: RunningServer, admin: Client, tmp_path: Path
) -> None:
    first = admin.list_audit(after=0, limit=1)[0]
    kept = tmp_path / "received.jsonl"
    kept.write_text(json.dumps({"seq": first["seq"], "hash": first["hash"]}) + "\n")
    assert cli(srv, "audit", "verify", "--anchors", str(kept)).exit_code == 0
    # A receiver that holds another hash for entry 1 says the chain was rewritten.
    kept.write_text(json.dumps({"seq": first["seq"], "hash": "0" * 64}) + "\n")
    rewritten = cli(srv, "audit", "verify", "--anchors", str(kept))
    assert rewritten.exit_code == 1 and "at entry 1 (altered)" in rewritten.output
    kept.write_text("not an anchor\n")
    assert cli(srv, "audit", "verify", "--anchors", str(kept)).exit_code == 1


def test_bad_filters_name_the_field(admin: Client) -> None:
    for params, field in [({"since": "yesterday-ish"}, "since"), ({"limit": 0}, "limit")]:
        with pytest.raises(ModelportClientError) as refused:
            admin.list_audit(**params)  # type: ignore[arg-type]
        assert 400 <= refused.value.status < 500 and field in refused.value.message


# -- tampering with the stored entries ---------------------------------------------------------


def tamper_cases(
    run: Callable[[str], None], srv: RunningServer, admin: Client, backend: str
) -> None:
    """Alter, delete and insert one entry, each undone after verify named it; then cut the
    tail (and put the head row back) after it was anchored."""
    seq = entries(admin, action="models.register")[0]["seq"]

    def verify_fails(kind: str, at: int) -> None:
        result = cli(srv, "audit", "verify")
        assert result.exit_code == 1, result.output
        assert f"at entry {at} ({kind})" in result.output, (backend, result.output)

    run(f"UPDATE audit_entries SET actor = 'mallory' WHERE seq = {seq}")
    verify_fails("altered", seq)
    run(f"UPDATE audit_entries SET actor = 'admin' WHERE seq = {seq}")
    assert cli(srv, "audit", "verify").exit_code == 0

    run(f"CREATE TABLE saved AS SELECT * FROM audit_entries WHERE seq = {seq}")
    run(f"DELETE FROM audit_entries WHERE seq = {seq}")
    verify_fails("removed", seq)
    run("INSERT INTO audit_entries SELECT * FROM saved")
    run("DROP TABLE saved")
    assert cli(srv, "audit", "verify").exit_code == 0

    # A forged entry past the head: the server writes nothing meanwhile (no one calls it).
    last = admin.list_audit(limit=1)[-1]["seq"]
    run(
        "INSERT INTO audit_entries (seq, at, actor, action, target, request_id, source, "
        "before, after, outcome, details, prev_hash, hash) SELECT seq + 1, at, 'mallory', "
        "'keys.create', target, '', '', '', '', 'ok', details, hash, hash FROM audit_entries "
        f"WHERE seq = {last}"
    )
    verify_fails("inserted", last + 1)
    run(f"DELETE FROM audit_entries WHERE seq = {last + 1}")
    assert cli(srv, "audit", "verify").exit_code == 0

    wait_for(lambda: head_anchored(srv) >= last, 10, "the head anchored")
    run(f"DELETE FROM audit_entries WHERE seq > {last - 2}")
    run(
        f"UPDATE audit_head SET seq = {last - 2}, "
        f"hash = (SELECT hash FROM audit_entries WHERE seq = {last - 2})"
    )
    verify_fails("truncated", last - 1)


def test_tampering_in_sqlite_is_named(srv: RunningServer, admin: Client) -> None:
    def run(statement: str) -> None:
        with sqlite3.connect(srv.home / "modelport.db", timeout=10) as connection:
            connection.execute(statement)

    tamper_cases(run, srv, admin, "sqlite")


def test_tampering_in_postgresql_is_named(tmp_path: Path, postgres_url: str) -> None:
    url = new_database(postgres_url, "audit_tamper")
    database = url.replace("postgresql+psycopg://", "postgresql://")
    server = start_server(tmp_path / "home", env={**ENV, "MODELPORT_DATABASE_URL": url})
    try:
        with server.client() as admin:
            admin.create_model("audited", "custom")
            register(admin, tmp_path, 1)
            admin.put_secret("one", "value-1")
            admin.put_secret("two", "value-2")

            def run(statement: str) -> None:
                with psycopg.connect(database, autocommit=True) as connection:
                    connection.execute(statement)  # type: ignore[arg-type]

            tamper_cases(run, server, admin, "postgresql")
    finally:
        stop_server(server)


def test_audit_survives_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", env=ENV)
    try:
        with server.client() as admin:
            admin.put_secret("a", "value-a")
    finally:
        stop_server(server)
    time.sleep(0.1)
    server = start_server(tmp_path / "home", env=ENV)
    try:
        with server.client() as admin:
            admin.put_secret("b", "value-b")
            result = admin.verify_audit()
            assert result["ok"] and result["checked"] >= 2 and result["anchors"] >= 1
    finally:
        stop_server(server)
