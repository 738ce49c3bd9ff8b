"""Teams, roles and user tokens on a real server: who may change, deploy and read what.

Team A and team B each own a project with an endpoint (the demo breast-cancer model); people
act with their own user tokens, as the CLI sends them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.cli import app as cli
from modelport.client import Client, ModelportClientError

from .conftest import BREAST_CANCER_ONLY, RunningServer, demo_server

pytestmark = pytest.mark.integration


def _intent(endpoint: str, project: str, replicas: int = 1) -> str:
    return f"""\
endpoint: {endpoint}
project: {project}
task: tabular
model: breast-cancer:1
resources:
  replicas: {{min: {replicas}, max: {replicas}}}
"""


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with teams a and b, their projects, their endpoints, and people:
    alice (deployer of a), bob (deployer of b), vera (viewer of a), olga (owner of a)."""
    home = tmp_path_factory.mktemp("identity") / "home"
    with demo_server(home, "breast-cancer", env=BREAST_CANCER_ONLY) as server:
        tokens: dict[str, str] = {}
        with server.client() as admin:
            for team in ("team-a", "team-b"):
                admin.create_team(team)
            admin.create_project("proj-a", "team-a")
            admin.create_project("proj-b", "team-b")
            for user, team, role in (
                ("alice", "team-a", "deployer"),
                ("bob", "team-b", "deployer"),
                ("vera", "team-a", "viewer"),
                ("olga", "team-a", "owner"),
            ):
                tokens[user] = admin.create_user(user)["token"]
                admin.grant_role(team, user, role)
        # Each deployer deploys into its own team.
        for user, endpoint, project in (("alice", "ep-a", "proj-a"), ("bob", "ep-b", "proj-b")):
            with server.client(tokens[user]) as client:
                assert client.apply(_intent(endpoint, project))["action"] == "created"
                client.wait_ready(endpoint, timeout=120)
        yield {"server": server, "tokens": tokens}


def _as(teams: dict[str, Any], user: str) -> Client:
    server: RunningServer = teams["server"]
    return server.client(teams["tokens"][user])


def _refused(call: Any, status: int = 403) -> ModelportClientError:
    with pytest.raises(ModelportClientError) as info:
        call()
    assert info.value.status == status, info.value
    return info.value


def test_a_deployer_of_team_a_cannot_change_team_bs_endpoint(teams: dict[str, Any]) -> None:
    with _as(teams, "alice") as alice:
        refusal = _refused(lambda: alice.apply(_intent("ep-b", "proj-b", replicas=2)))
        assert refusal.details["team"] == "team-b"
        assert "deploy" in refusal.message
        # Nor by claiming it for her own project.
        _refused(lambda: alice.apply(_intent("ep-b", "proj-a")))
        _refused(lambda: alice.rollout_action("ep-b", "pause"))
        _refused(lambda: alice.delete_endpoint("ep-b"))
        _refused(lambda: alice.get_endpoint("ep-b"))
        # What she may see: her team's endpoint only.
        assert [e["name"] for e in alice.list_endpoints()] == ["ep-a"]
        # Her endpoint's revision records her name.
        revisions = alice.list_revisions("ep-a")
        assert revisions[0]["created_by"] == "alice"
    with _as(teams, "bob") as bob:
        assert bob.get_endpoint("ep-b")["replicas"] == 1  # unchanged


def test_a_viewer_cannot_deploy(teams: dict[str, Any]) -> None:
    with _as(teams, "vera") as vera:
        assert vera.get_endpoint("ep-a")["name"] == "ep-a"
        refusal = _refused(lambda: vera.apply(_intent("ep-a", "proj-a", replicas=2)))
        assert "you are its viewer" in refusal.message
        _refused(lambda: vera.rollout_action("ep-a", "pause"))
        _refused(lambda: vera.create_key("proj-a", "vera-key"))
        _refused(lambda: vera.create_team("vera-team"))


def test_an_owner_grants_roles_on_their_team_only(teams: dict[str, Any]) -> None:
    server: RunningServer = teams["server"]
    with server.client() as admin:
        admin.create_user("carol")
    with _as(teams, "olga") as olga:
        olga.grant_role("team-a", "carol", "viewer")
        assert {"user": "carol", "role": "viewer"} in olga.get_team("team-a")["members"]
        refusal = _refused(lambda: olga.grant_role("team-b", "carol", "owner"))
        assert refusal.details["team"] == "team-b"
        olga.revoke_role("team-a", "carol")
    with _as(teams, "alice") as alice:  # a deployer manages no roles
        _refused(lambda: alice.grant_role("team-a", "alice", "owner"))


def test_a_key_of_project_a_cannot_see_project_bs_usage(teams: dict[str, Any]) -> None:
    server: RunningServer = teams["server"]
    with server.client() as admin:
        key_a = admin.create_key("proj-a", "usage-a")["key"]
        key_b = admin.create_key("proj-b", "usage-b")["key"]
    rows = {"input": np.zeros((2, 30), dtype=np.float32)}
    for key, endpoint in ((key_a, "ep-a"), (key_b, "ep-b")):
        with server.client(key) as data:
            data.infer(endpoint, rows)
    with httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {key_a}"}, timeout=30
    ) as http:
        own = http.get("/api/v1/usage", params={"project": "proj-a", "since": "1h"})
        assert own.status_code == 200, own.text
        other = http.get("/api/v1/usage", params={"project": "proj-b", "since": "1h"})
        assert other.status_code == 403, other.text
        assert other.json()["error"]["details"]["field"] == "project"
        assert http.get("/api/v1/usage", params={"by": "project"}).status_code == 403
        assert http.get("/api/v1/costs", params={"project": "proj-b"}).status_code == 403
        assert http.get("/api/v1/usage/recent").status_code == 403
        assert http.get("/api/v1/endpoints").status_code == 403
        assert http.get("/api/v1/endpoints/ep-b").status_code == 403
    with _as(teams, "vera") as vera:  # a person of team a: the same line
        assert vera.usage_report(project="proj-a", since="1h") is not None
        _refused(lambda: vera.usage_report(project="proj-b", since="1h"))


def test_bad_inputs_name_the_field_and_store_nothing(teams: dict[str, Any]) -> None:
    server: RunningServer = teams["server"]
    with server.client() as admin:
        before = admin.get_team("team-a")["members"]
        refusal = _refused(lambda: admin.grant_role("team-a", "alice", "superuser"), 400)
        assert refusal.details["field"] == "role"
        refusal = _refused(lambda: admin.grant_role("team-a", "nobody", "viewer"), 400)
        assert refusal.details["field"] == "user"
        refusal = _refused(lambda: admin.grant_role("no-such-team", "alice", "viewer"), 404)
        assert refusal.details["field"] == "team"
        assert admin.get_team("team-a")["members"] == before
        refusal = _refused(lambda: admin.create_project("proj-x", "no-such-team"), 400)
        assert refusal.details["field"] == "team"
        assert "proj-x" not in [p["name"] for p in admin.list_projects()]
        refusal = _refused(lambda: admin.apply(_intent("ep-x", "no-such-project")), 400)
        assert refusal.details["field"] == "project"
        assert "modelport projects create" in refusal.message
        _refused(lambda: admin.get_endpoint("ep-x"), 404)
        refusal = _refused(lambda: admin.create_user("Bad Name!"), 400)
        assert refusal.details["field"] == "name"
        _refused(lambda: admin.create_user("alice"), 409)
        _refused(lambda: admin.create_team("team-a"), 409)
        assert sorted(u["name"] for u in admin.list_users()).count("alice") == 1


def test_rotated_and_disabled_tokens_stop_at_once(teams: dict[str, Any]) -> None:
    server: RunningServer = teams["server"]
    with server.client() as admin:
        old = admin.create_user("temp")["token"]
        admin.grant_role("team-a", "temp", "viewer")
        new = admin.rotate_user_token("temp")["token"]
    with server.client(old) as client:
        _refused(client.whoami, 401)
    with server.client(new) as client:
        assert client.whoami()["teams"] == {"team-a": "viewer"}
    with server.client() as admin:
        admin.disable_user("temp")
    with server.client(new) as client:
        _refused(client.whoami, 401)


def test_the_cli_acts_with_the_users_token(teams: dict[str, Any], tmp_path: Path) -> None:
    server: RunningServer = teams["server"]
    runner = CliRunner()
    env = {"MODELPORT_URL": server.url, "MODELPORT_HOME": str(tmp_path)}
    listed = runner.invoke(
        cli, ["teams", "list", "--json", "--token", teams["tokens"]["vera"]], env=env
    )
    assert listed.exit_code == 0, listed.output
    assert '"team-a"' in listed.output and '"team-b"' not in listed.output
    refused = runner.invoke(
        cli, ["teams", "create", "vera-team", "--token", teams["tokens"]["vera"]], env=env
    )
    assert refused.exit_code == 1
    assert "403" in refused.output
    granted = runner.invoke(
        cli,
        ["teams", "grant", "team-a", "vera", "owner", "--token", teams["tokens"]["bob"]],
        env=env,
    )
    assert granted.exit_code == 1 and "403" in granted.output


def test_changes_and_refusals_are_audited_under_the_callers_name(teams: dict[str, Any]) -> None:
    server: RunningServer = teams["server"]
    with _as(teams, "bob") as bob:
        _refused(lambda: bob.delete_endpoint("ep-a"))
    with server.client() as admin:
        grants = admin.list_audit(action="roles.grant")
        by_target = {g["target"]: g["actor"] for g in grants}
        assert by_target["team:team-a/user:alice"] == by_target["team:team-b/user:bob"] == "admin"
        assert admin.list_audit(action="users.create", target="user:vera")

        def denied() -> list[str]:
            return [e["target"] for e in admin.list_audit(actor="bob", action="access.denied")]

        wanted = "DELETE /api/v1/endpoints/ep-a"
        deadline = time.monotonic() + 10  # refusals are written in batches, within 0.5 s
        while wanted not in denied() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wanted in denied()
