"""Replicas are real worker processes: supervised, restarted, verified, drained."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.tree import DecisionTreeClassifier

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import RunningServer, alive, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tree_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory artifact: a joblib estimator plus a README, as teams ship them."""
    data = load_breast_cancer()
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(data.data, data.target)
    directory = tmp_path_factory.mktemp("tree") / "tree-model"
    directory.mkdir()
    joblib.dump(model, directory / "model.joblib")
    (directory / "README.md").write_text("decision tree, depth 4\n")
    return directory


def test_killed_worker_is_restarted(admin: Client, data_client: Client) -> None:
    before = admin.get_endpoint("breast-cancer")["replica_status"][0]
    os.kill(before["pid"], signal.SIGKILL)

    def restored() -> bool:
        replica = admin.get_endpoint("breast-cancer")["replica_status"][0]
        return replica["state"] == "ready" and replica["pid"] != before["pid"]

    wait_for(restored, message="the replica to be restarted")
    after = admin.get_endpoint("breast-cancer")["replica_status"][0]
    assert after["restarts"] == before["restarts"] + 1
    assert after["address"] == before["address"]  # the supervisor kept the socket
    assert "exited with code" in after["last_error"]
    outputs = data_client.infer("breast-cancer", {"input": np.full((1, 30), 0.5)})
    assert outputs["label"].shape == (1,)


def test_sklearn_directory_artifact_with_two_replicas(
    admin: Client, data_client: Client, tree_model_dir: Path
) -> None:
    version = admin.register("tree", tree_model_dir, task="tabular", runtime="sklearn")
    assert version["version"] == 1
    assert version["signature"]["inputs"][0] == {
        "name": "input",
        "datatype": "FP32",
        "shape": [-1, 30],
        "optional": False,
    }
    admin.create_endpoint("tree", "tree:1", replicas=2)
    endpoint = admin.wait_ready("tree")
    assert len({r["pid"] for r in endpoint["replica_status"]}) == 2

    data = load_breast_cancer()
    rows = data.data[:50].astype(np.float32)
    outputs = data_client.infer("tree", {"input": rows})
    assert (outputs["label"] == data.target[:50]).mean() >= 0.9
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0)

    # One replica down: the other keeps serving while it comes back.
    os.kill(endpoint["replica_status"][0]["pid"], signal.SIGKILL)
    for _ in range(20):
        assert data_client.infer("tree", {"input": rows[:1]})["label"].shape == (1,)
    pids = [r["pid"] for r in admin.wait_ready("tree")["replica_status"]]

    admin.delete_endpoint("tree")
    wait_for(lambda: not any(alive(pid) for pid in pids), message="replicas to stop")
    with pytest.raises(ModelportClientError) as gone:
        data_client.infer("tree", {"input": rows[:1]})
    assert gone.value.status == 404
    admin.delete_model("tree")  # no endpoint uses it any more


def test_tampered_artifact_is_never_loaded(
    server: RunningServer, admin: Client, data_client: Client, tree_model_dir: Path
) -> None:
    version = admin.register("tamper", tree_model_dir, task="tabular", runtime="sklearn")
    admin.create_endpoint("tamper", "tamper:1")
    endpoint = admin.wait_ready("tamper")

    stored = server.home / "artifacts" / "sha256" / version["artifact_digest"].split(":")[1]
    (stored / "README.md").write_text("changed behind the registry's back\n")
    os.kill(endpoint["replica_status"][0]["pid"], signal.SIGKILL)

    def refused() -> bool:
        error = admin.get_endpoint("tamper")["replica_status"][0]["last_error"] or ""
        return "digest mismatch" in error

    wait_for(refused, message="the worker to refuse the tampered artifact")
    with pytest.raises(ModelportClientError) as failing:  # waiting gives up, saying why
        admin.wait_ready("tamper", timeout=60)
    assert failing.value.code == "endpoint_failed"
    assert "digest mismatch" in failing.value.message
    with pytest.raises(ModelportClientError) as info:
        data_client.infer("tamper", {"input": np.zeros((1, 30))})
    assert info.value.status == 503
    admin.delete_endpoint("tamper")
