"""Recommendations on a real server: an endpoint kept at 3 replicas for a trickle of real
requests gets a "fewer replicas" proposal whose diff is resources.replicas, its outcome shows
with it, and bad queries or endpoints the caller may not read are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from tests.integration.conftest import BREAST_CANCER_ONLY, RunningServer, demo_server, wait_for

pytestmark = pytest.mark.integration

ENV = {**BREAST_CANCER_ONLY, "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2"}
OUTCOME = "Flag applications for manual review"
INTENT = f"""\
endpoint: bc-over
task: tabular
model: breast-cancer@champion
outcome: {OUTCOME}
slo:
  p95_latency_ms: 2000
resources:
  replicas: 3
"""
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
CALLS = 60


def _api(running: RunningServer, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"{running.url}/api/v1",
        headers={"authorization": f"Bearer {token or running.admin_token}"},
        timeout=60,
    )


def test_an_over_provisioned_endpoint_gets_fewer_replicas(tmp_path: Path) -> None:
    with demo_server(tmp_path / "home", "breast-cancer", env=ENV) as running, _api(running) as api:
        with running.client() as admin:
            assert admin.apply(INTENT)["action"] == "created"
            admin.wait_ready("bc-over", timeout=180)
            key = admin.create_key("default", "recommend")["key"]
        with httpx.Client(base_url=running.url, timeout=30) as data:
            for _ in range(CALLS):
                answer = data.post(
                    "/v2/models/bc-over/infer",
                    json=ROW,
                    headers={"authorization": f"Bearer {key}"},
                )
                assert answer.status_code == 200, answer.text

        def loaded() -> bool:
            one = api.get("/recommendations", params={"endpoint": "bc-over"}).json()
            return bool(one["endpoints"][0]["observed"]["requests"] == CALLS)

        wait_for(loaded, timeout=60, message="the calls in the usage rollups")
        answer = api.get("/recommendations", params={"endpoint": "bc-over", "days": 1})
        assert answer.status_code == 200, answer.text
        [one] = answer.json()["endpoints"]
        assert one["outcome"] == OUTCOME
        assert one["basis"] == "observed"
        assert one["observed"]["p95_ms"] is not None
        fewer = [p for p in one["proposals"] if p["kind"] == "fewer_replicas"]
        assert len(fewer) == 1, one
        assert fewer[0]["diff"] == [
            {
                "field": "resources.replicas",
                "before": {"min": 3, "max": 3},
                "after": {"min": 1, "max": 1},
            }
        ]
        assert fewer[0]["effect"]["monthly_usd"] < 0
        # Nothing was applied: the endpoint still runs its 3 replicas.
        endpoint = api.get("/endpoints/bc-over").json()
        assert endpoint["replicas"] == 3
        assert endpoint["outcome"] == OUTCOME
        # Every endpoint the admin reads: the demo's too (no intent applied: described).
        every = api.get("/recommendations").json()
        assert {"bc-over", "breast-cancer"} <= {e["endpoint"] for e in every["endpoints"]}
        # Usage rows name the outcome.
        usage = api.get("/usage", params={"by": "endpoint", "since": "1h"}).json()
        assert {r["endpoint"]: r["outcome"] for r in usage["rows"]}["bc-over"] == OUTCOME

        _refusals(running, api)
        _cli(running)
        _scale_to_zero_starts_with_one(running, api)


def _scale_to_zero_starts_with_one(running: RunningServer, api: httpx.Client) -> None:
    # replicas.min 0 still deploys a replica (control/apply: max(min, 1)); scaling to zero
    # is the autoscaler's, after idle_to_zero_after without a request.
    with running.client() as admin:
        intent = INTENT.replace("bc-over", "bc-zero").replace(
            "replicas: 3", "replicas: {min: 0, max: 2}"
        )
        assert admin.apply(intent)["action"] == "created"
        admin.wait_ready("bc-zero", timeout=180)
    assert api.get("/endpoints/bc-zero").json()["replicas"] == 1
    [one] = api.get("/recommendations", params={"endpoint": "bc-zero"}).json()["endpoints"]
    assert one["proposals"] == []
    assert any("already scales to zero" in note for note in one["notes"])


def _refusals(running: RunningServer, api: httpx.Client) -> None:
    for days in ("0", "91", "week", "nan"):
        bad = api.get("/recommendations", params={"days": days})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["details"]["param"] == "days"
    missing = api.get("/recommendations", params={"endpoint": "no-such"})
    assert missing.status_code == 404
    assert missing.json()["error"]["details"]["param"] == "endpoint"
    # A member of another team sees none of the default project's endpoints.
    with running.client() as admin:
        admin.create_team("elsewhere")
        token = admin.create_user("outsider")["token"]
        admin.grant_role("elsewhere", "outsider", "viewer")
    with _api(running, token) as outsider:
        listed = outsider.get("/recommendations")
        assert listed.status_code == 200, listed.text
        assert listed.json()["endpoints"] == []
        refused = outsider.get("/recommendations", params={"endpoint": "bc-over"})
        assert refused.status_code == 403
        # Refused by the access guard, naming the endpoint's team and what it needs.
        assert "read permission on team 'default'" in refused.json()["error"]["message"]


def _cli(running: RunningServer) -> None:
    runner = CliRunner()
    common = ["--url", running.url, "--token", running.admin_token]
    result = runner.invoke(
        app, ["recommend", "bc-over", "--days", "1", "--format", "json", *common]
    )
    assert result.exit_code == 0, result.output
    [one] = json.loads(result.output)["endpoints"]
    assert "fewer_replicas" in [p["kind"] for p in one["proposals"]]
    result = runner.invoke(app, ["recommend", "bc-over", *common], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fewer_replicas" in result.output
    assert "resources.replicas" in result.output
    result = runner.invoke(app, ["recommend", "--days", "0", *common])
    assert result.exit_code == 1
    assert "days" in result.output
