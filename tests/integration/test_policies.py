"""Policies as code against a real server: refusals at apply naming the rule, audit mode,
the dry run, bad policies, and four-eyes approval of a promotion to production."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError

from .conftest import BREAST_CANCER_ONLY, RunningServer, demo_server

pytestmark = pytest.mark.integration

runner = CliRunner()

SCORER = """
class Scorer:
    def predict(self, inputs):
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
AUDIT_POLICY = """\
name: versions-have-an-owner
mode: audit
stages: [apply]
rules:
  - name: version-needs-owner-tag
    require:
      version.tags.owner: {exists: true}
    message: Tag every model version with its owner (--tag owner=TEAM).
"""


def intent(endpoint: str, version: int, extra: str = "") -> str:
    return f"endpoint: {endpoint}\ntask: custom\nmodel: scorer:{version}\n{extra}"


PRODUCTION = """\
environment: production
data: {sensitivity: confidential}
slo: {availability: 99.5}
budget: {monthly_usd: 100}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_ROLLOUT_TICK_S": "0.1"}
    with demo_server(tmp_path_factory.mktemp("policies") / "home", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(srv: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("scorers")
    with srv.client() as client:
        client.create_model("scorer", "custom")
        for version in (1, 2):
            directory = root / f"v{version}"
            directory.mkdir()
            (directory / "model.py").write_text(SCORER + f"# version {version}\n")
            client.create_version(
                "scorer",
                "python",
                artifact_path=str(directory),
                runtime_options={"class": "model:Scorer"},
                signature=SIGNATURE,
            )
        yield client


def _refused(call: Any) -> ModelportClientError:
    with pytest.raises(ModelportClientError) as caught:
        call()
    return caught.value


def test_shipped_policies_are_in_force(admin: Client) -> None:
    listed = {p["name"]: p for p in admin.list_policies()}
    assert set(listed) == {
        "data-residency",
        "four-eyes",
        "minimum-quality",
        "no-pickle-in-production",
        "production-readiness",
    }
    assert all(p["mode"] == "enforce" and p["enabled"] for p in listed.values())


def test_confidential_data_in_a_shared_environment_is_refused_at_apply(admin: Client) -> None:
    text = intent("leaky", 1, "data: {sensitivity: confidential}\n")
    for dry_run in (True, False):  # plan (modelport diff) and apply
        error = _refused(lambda d=dry_run: admin.apply(text, dry_run=d))
        assert (error.status, error.code) == (403, "policy_denied")
        assert error.details["policy"] == "data-residency"
        assert error.details["rule"] == "sensitive-data-needs-dedicated-environment"
        assert "environment: production" in error.details["comply"]
        assert "sensitive-data-needs-dedicated-environment" in error.message
    assert _refused(lambda: admin.get_endpoint("leaky")).status == 404  # nothing stored


def test_policy_test_is_a_dry_run_of_every_rule(
    srv: RunningServer, admin: Client, tmp_path: Path
) -> None:
    bare = tmp_path / "modelport.yaml"
    bare.write_text(intent("dry", 1, "environment: production\n"))
    verdict = admin.test_policies(bare)
    outcomes = {(r["policy"], r["rule"]): r["outcome"] for r in verdict["rules"]}
    assert outcomes[("production-readiness", "production-needs-slo")] == "deny"
    assert outcomes[("production-readiness", "production-needs-budget")] == "deny"
    assert outcomes[("no-pickle-in-production", "production-refuses-pickle")] == "pass"
    assert outcomes[("minimum-quality", "production-version-needs-accuracy")] == "skip"
    assert not verdict["allowed"]
    env = {"MODELPORT_URL": srv.url, "MODELPORT_TOKEN": srv.admin_token}
    result = runner.invoke(app, ["policy", "test", "-f", str(bare)], env=env)
    assert result.exit_code == 1, result.output
    assert "DENY production-readiness/production-needs-budget" in result.output
    assert "how to comply: Production endpoints declare a budget" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(intent("dry", 1, PRODUCTION))
    result = runner.invoke(app, ["policy", "test", "-f", str(good), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["allowed"] is True
    assert _refused(lambda: admin.get_endpoint("dry")).status == 404


def test_a_bad_policy_is_refused_naming_field_and_line(admin: Client) -> None:
    before = admin.list_policies()
    bad = AUDIT_POLICY.replace("version.tags.owner", "version.tag.owner")
    error = _refused(lambda: admin.put_policy("versions-have-an-owner", bad))
    assert (error.status, error.code) == (422, "validation_failed")
    [problem] = error.details["errors"]
    assert problem["field"] == "rules[0].require.version.tag.owner" and problem["line"] == 7
    assert "unknown field 'version.tag.owner'" in problem["message"]
    assert admin.list_policies() == before
    assert _refused(lambda: admin.put_policy("Bad Name", AUDIT_POLICY)).status == 400


def test_audit_mode_records_and_does_not_block(srv: RunningServer, admin: Client) -> None:
    stored = admin.put_policy("versions-have-an-owner", AUDIT_POLICY)
    assert (stored["version"], stored["mode"]) == (1, "audit")
    try:
        assert admin.apply(intent("audited", 1))["action"] == "created"
        [entry] = admin.list_audit(action="policy.audit_denied", target="endpoint:audited")
        assert entry["actor"] == "admin"
        assert entry["details"]["rule"] == "version-needs-owner-tag"
        [put] = admin.list_audit(action="policies.put", target="policy:versions-have-an-owner")
        assert put["actor"] == "admin"
    finally:
        admin.delete_policy("versions-have-an-owner")
        admin.delete_endpoint("audited")
    shown = admin.policy("versions-have-an-owner")
    assert [(v["version"], v["enabled"]) for v in shown["versions"]] == [(1, True), (2, False)]
    assert admin.list_audit(action="policies.delete", target="policy:versions-have-an-owner")


def _user(admin: Client, srv: RunningServer, name: str) -> Client:
    token = admin._object("POST", "/api/v1/users", json={"name": name})["token"]
    admin._object("POST", "/api/v1/teams/default/members", json={"user": name, "role": "deployer"})
    return srv.client(token)


def _wait_state(client: Client, endpoint: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rollout = client.rollout(endpoint)
        if rollout["state"] == state:
            return rollout
        assert time.monotonic() < deadline, rollout
        time.sleep(0.2)


def test_four_eyes_the_starter_cannot_approve_a_promotion_to_production(
    srv: RunningServer, admin: Client
) -> None:
    with _user(admin, srv, "bob") as bob:
        _four_eyes(admin, bob)


def _four_eyes(admin: Client, bob: Client) -> None:
    assert admin.apply(intent("prod", 1, PRODUCTION))["action"] == "created"
    admin.wait_ready("prod")
    assert admin.apply(intent("prod", 2, PRODUCTION))["action"] == "rollout"

    # Ready and judged, it waits for a second person instead of promoting or rolling back.
    waiting = _wait_state(admin, "prod", "paused")
    assert "waiting for approval by someone other than admin" in waiting["reason"]
    assert "modelport rollout approve prod" in waiting["reason"]
    assert waiting["events"][-1]["kind"] == "awaiting_approval"
    time.sleep(1)  # ten ticks later it still waits
    assert admin.rollout("prod")["state"] == "paused"

    promote = _refused(lambda: admin.rollout_action("prod", "promote"))
    assert (promote.status, promote.code) == (403, "policy_denied")
    assert promote.details["rule"] == "production-promotion-needs-second-person"
    own = _refused(lambda: admin.rollout_action("prod", "approve"))
    assert (own.status, own.code) == (403, "policy_denied")
    assert own.message.startswith("four-eyes: admin started this rollout")
    assert own.details["rule"] == "production-promotion-needs-second-person"
    assert admin.rollout("prod")["state"] == "paused"

    approved = bob.rollout_action("prod", "approve")
    assert approved["state"] == "promoted"
    kinds = [e["kind"] for e in approved["events"]]
    assert kinds[-2:] == ["approved", "promoted"]
    assert "approved by bob" in approved["events"][-2]["message"]
    assert admin.get_endpoint("prod")["stable_revision"] == "r2"
    [entry] = admin.list_audit(action="rollouts.approve", target="endpoint:prod")
    assert entry["actor"] == "bob"
    # Nothing left to approve: a finished rollout.
    assert _refused(lambda: bob.rollout_action("prod", "approve")).status == 409


KEYS_EXPIRE = """\
name: keys-expire
stages: [key_create]
rules:
  - name: keys-need-an-expiry
    require:
      key.expires_at: {exists: true}
    message: Give every key an expiry (expires_at).
"""
GATE = """\
name: gate
stages: [promote]
rules:
  - name: only-version-1
    when:
      endpoint.name: {equals: gate}
    require:
      version.version: {lte: 1}
    message: Only version 1 of the scorer may serve the gate endpoint.
"""


def test_key_creation_is_checked(admin: Client) -> None:
    admin.put_policy("keys-expire", KEYS_EXPIRE)
    try:
        error = _refused(lambda: admin.create_key("default", "forever"))
        assert (error.status, error.code) == (403, "policy_denied")
        assert error.details["rule"] == "keys-need-an-expiry"
        assert "key.expires_at is missing" in error.message
        assert "forever" not in {k["name"] for k in admin.list_keys()}
        dated = admin.create_key("default", "dated", expires_at=datetime(2099, 1, 1, tzinfo=UTC))
        assert dated["name"] == "dated"
    finally:
        admin.delete_policy("keys-expire")


def test_a_promotion_a_policy_refuses_waits_instead_of_rolling_back(admin: Client) -> None:
    assert admin.apply(intent("gate", 1))["action"] == "created"
    admin.wait_ready("gate")
    admin.put_policy("gate", GATE)
    try:
        assert admin.apply(intent("gate", 2))["action"] == "rollout"
        waiting = _wait_state(admin, "gate", "paused")
        assert waiting["events"][-1]["kind"] == "policy_denied"
        assert "promotion refused by policy 'gate' rule 'only-version-1'" in waiting["reason"]
        assert "version.version is 2; it must be <= 1" in waiting["reason"]
        error = _refused(lambda: admin.rollout_action("gate", "promote"))
        assert (error.status, error.details["rule"]) == (403, "only-version-1")
        # No policy asks for an approval here: approving is a conflict, not a promotion.
        assert _refused(lambda: admin.rollout_action("gate", "approve")).status == 409
    finally:
        admin.delete_policy("gate")
    assert admin.rollout_action("gate", "promote")["state"] == "promoted"
    assert admin.get_endpoint("gate")["stable_revision"] == "r2"


def test_policy_cli_put_list_show_delete(srv: RunningServer, tmp_path: Path) -> None:
    env = {"MODELPORT_URL": srv.url, "MODELPORT_TOKEN": srv.admin_token}
    path = tmp_path / "policy.yaml"
    path.write_text(KEYS_EXPIRE.replace("name: keys-expire\n", ""))  # named by the command
    put = runner.invoke(app, ["policy", "put", "cli-keys", "-f", str(path), "--json"], env=env)
    assert put.exit_code == 0, put.output
    assert json.loads(put.output)["version"] == 1
    listed = runner.invoke(app, ["policy", "list"], env=env)
    assert listed.exit_code == 0 and "cli-keys" in listed.output
    shown = runner.invoke(app, ["policy", "show", "cli-keys"], env=env)
    assert shown.exit_code == 0 and "keys-need-an-expiry" in shown.output
    assert "v1 enforce by admin" in shown.output
    deleted = runner.invoke(app, ["policy", "delete", "cli-keys", "--json"], env=env)
    assert deleted.exit_code == 0 and json.loads(deleted.output)["enabled"] is False
    path.write_text(KEYS_EXPIRE.replace("key.expires_at", "key.expiry"))
    bad = runner.invoke(app, ["policy", "put", "keys-expire", "-f", str(path)], env=env)
    assert bad.exit_code == 1
    assert "unknown field 'key.expiry'" in bad.output and "line 6" in bad.output
