"""The issue's drift proof on the breast-cancer demo: rows from its training distribution
raise no drift; rows with two features tripled do, naming exactly those two; reference data
that does not match the model is refused, naming the field, and nothing is stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner, Result

from modelport.cli import app
from modelport.client import Client, ModelportClientError

from .conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    ensure_project,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

SHIFTED = ("mean radius", "worst area")
ENV = {
    **BREAST_CANCER_ONLY,
    "MODELPORT_DRIFT_SAMPLE_RATE": "1.0",
    "MODELPORT_DRIFT_INTERVAL_S": "0.3",
}


@pytest.fixture(scope="module")
def drift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("drift") / ".modelport", "--demo", env=ENV)
    try:
        with running.client() as admin:
            admin.wait_ready("breast-cancer")
        yield running
    finally:
        stop_server(running)


def _features(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (revision,) = report["revisions"]
    return {f["feature"]: f for f in revision["features"]}


def _settled(admin: Client, rows: int) -> dict[str, Any]:
    """The report once every input feature has been scored over ``rows`` live values."""
    deadline = time.monotonic() + 30
    while True:
        report = admin.get_drift("breast-cancer")
        if report["revisions"]:
            inputs = [f for f in _features(report).values() if f["source"] == "input"]
            if inputs and all(f["live_rows"] >= rows for f in inputs):
                return report
        assert time.monotonic() < deadline, f"drift was not scored in time: {report}"
        time.sleep(0.3)


def _send(data_client: Client, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 50):
        data_client.infer("breast-cancer", {"input": rows[start : start + 50]})


def test_training_rows_raise_no_drift_and_shifted_rows_name_their_features(
    drift_server: RunningServer,
) -> None:
    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    rows = data.data.astype(np.float32)
    with drift_server.client() as admin:
        key = admin.create_key("default", "drift")["key"]
        with drift_server.client(key) as data_client:
            _send(data_client, rows)  # 569 rows: the training distribution
            report = _settled(admin, len(rows))
            features = _features(report)
            assert set(names) <= set(features)
            inputs = {n: features[n] for n in names}
            assert all(f["status"] in ("ok", "warn") for f in inputs.values()), inputs
            assert report["revisions"][0]["drifted"] == []
            assert report["revisions"][0]["alert"] is False
            assert report["thresholds"]["psi_drift"] == 0.2
            assert features["predicted_class"]["source"] == "output"

            shifted = rows.copy()
            for name in SHIFTED:
                shifted[:, names.index(name)] *= 3
            _send(data_client, np.concatenate([shifted, shifted]))  # fills the window
            report = _settled(admin, 1000)
            while any(
                f["live_rows"] < 1000 or (f["status"] == "ok" and f["feature"] in SHIFTED)
                for f in _features(report).values()
                if f["source"] == "input"
            ):
                time.sleep(0.3)
                report = admin.get_drift("breast-cancer")
            revision = report["revisions"][0]
            # Exactly the shifted inputs drift (the predicted classes may move with them).
            drifted = [f["feature"] for f in revision["features"] if f["source"] == "input"]
            drifted = [n for n in drifted if _features(report)[n]["status"] == "drift"]
            assert sorted(drifted) == sorted(SHIFTED)
            assert set(SHIFTED) <= set(revision["drifted"])
            assert revision["alert"] is True
            for name in SHIFTED:
                assert _features(report)[name]["psi"] > 0.2
            (alert,) = admin.list_alerts(state="open", endpoint="breast-cancer")
            assert alert["kind"] == "drift"
            assert all(name in alert["summary"] for name in SHIFTED)
            _cli_shows_the_drift(drift_server)

            # Back to the training distribution: the window refills and the alert closes.
            _send(data_client, np.concatenate([rows, rows]))
            deadline = time.monotonic() + 30
            while admin.list_alerts(state="open", endpoint="breast-cancer"):
                assert time.monotonic() < deadline, "the drift alert did not close"
                time.sleep(0.3)
            assert admin.get_drift("breast-cancer")["revisions"][0]["alert"] is False


def _cli_shows_the_drift(server: RunningServer) -> None:
    def cli(*args: str) -> Result:
        return CliRunner().invoke(
            app,
            ["drift", *args, "--url", server.url, "--token", server.admin_token],
            env={"COLUMNS": "200"},
        )

    shown = cli("breast-cancer")
    assert shown.exit_code == 0, shown.output
    assert "drift alert open" in shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith("│")]
    for name in SHIFTED:
        assert any(f"│ {name} " in row and "│ drift " in row for row in rows), shown.output
    as_json = cli("breast-cancer", "--json")
    assert json.loads(as_json.output)["endpoint"] == "breast-cancer"
    missing = cli("no-such-endpoint")
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_reference_data_with_wrong_columns_is_refused(
    drift_server: RunningServer, tmp_path: Path
) -> None:
    artifact = drift_server.home / "demo" / "breast-cancer" / "model.onnx"
    bad = tmp_path / "bad-reference.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with drift_server.client() as admin:
        model = admin.get_model("breast-cancer")
        reference = admin.upload_artifact(bad)["digest"]
        stored = admin.upload_artifact(artifact)["digest"]
        with pytest.raises(ModelportClientError) as refused:
            admin.create_version(
                "breast-cancer", "onnx", artifact_digest=stored, reference_digest=reference
            )
        assert refused.value.status == 400
        assert refused.value.details["param"] == "reference_digest"
        assert "takes 30" in refused.value.message
        assert admin.get_model("breast-cancer")["versions"] == model["versions"]


CLASSER = """
import numpy as np


class Classer:
    def predict(self, inputs):
        x = inputs["features"]
        return {"label": %s}
"""
SAME = "(x[:, 0] > 0.5).astype(np.int64)"
ALWAYS_TWO = "np.full(len(x), 2, dtype=np.int64)"
CLASSER_SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
}


def _classer_intent(version: int, strategy: str) -> str:
    return f"""\
endpoint: classer
project: drift
task: custom
model: classer:{version}
rollout:
  strategy: {strategy}
  steps: [50, 100]
  interval: 1s
  min_requests: 5
  output_drift:
    max_psi: 0.2
    min_samples: 40
"""


def _roll_out(admin: Client, data_client: Client, version: int) -> dict[str, Any]:
    """Apply ``version`` by canary and call the endpoint until the rollout ends."""
    result = admin.apply(_classer_intent(version, "canary"))
    assert result["action"] == "rollout", result
    rng = np.random.default_rng(version)
    deadline = time.monotonic() + 60
    while (rollout := admin.rollout("classer"))["state"] not in ("promoted", "rolled_back"):
        assert time.monotonic() < deadline, f"the rollout did not end: {rollout}"
        data_client.infer("classer", {"features": rng.uniform(0, 1, (10, 2))})
    return rollout


def test_canary_output_drift_gate(drift_server: RunningServer, tmp_path: Path) -> None:
    ensure_project(drift_server, "drift")  # the intent's project, and its key's
    with drift_server.client() as admin:
        admin.create_model("classer", "custom")
        for version, label in enumerate((SAME, ALWAYS_TWO, SAME), start=1):
            directory = tmp_path / f"v{version}"
            directory.mkdir()
            (directory / "model.py").write_text(CLASSER % label)
            admin.create_version(
                "classer",
                "python",
                artifact_path=str(directory),
                runtime_options={"class": "model:Classer"},
                signature=CLASSER_SIGNATURE,
            )
        admin.apply(_classer_intent(1, "immediate"))
        admin.wait_ready("classer")
        key = admin.create_key("drift", "canary")["key"]
        with drift_server.client(key) as data_client:
            # A candidate answering class 2 to everything: rolled back, drift named.
            rolled_back = _roll_out(admin, data_client, 2)
            assert rolled_back["state"] == "rolled_back", rolled_back
            assert rolled_back["reason"].startswith("output drift"), rolled_back["reason"]
            assert "r2 against r1" in rolled_back["reason"]
            # A candidate answering as the stable one does: the gate lets it through.
            promoted = _roll_out(admin, data_client, 3)
            assert promoted["state"] == "promoted", promoted
            judged = [e["data"] for e in promoted["events"] if e["kind"] == "promoted"]
            assert judged[0]["output_drift"]["psi"] < 0.2
