"""The README's quickstart, as a new user would run it: curl-style HTTP, tritonclient, Client."""

from __future__ import annotations

import stat

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_breast_cancer

from modelport.client import Client
from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data[:40].astype(np.float32), data.target[:40]


def test_admin_token_file_is_private(server: RunningServer) -> None:
    mode = (server.home / "admin-token").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_demo_endpoint_is_registered_and_ready(admin: Client) -> None:
    endpoint = admin.get_endpoint("breast-cancer")
    assert endpoint["status"] == "ready"
    assert endpoint["model_ref"] == "breast-cancer@champion"
    model = admin.get_model("breast-cancer")
    assert model["aliases"] == {"champion": 1}
    version = model["versions"][0]
    assert version["runtime"] == "onnx"
    assert version["metrics"]["accuracy"] > 0.9
    assert version["reference_digest"].startswith("sha256:")
    assert version["signature"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 30], "optional": False}
    ]


def test_plain_http_infer(server: RunningServer, api_key: str, samples) -> None:
    rows, _ = samples
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 30], "data": rows[:2].tolist()}
        ],
    }
    response = httpx.post(
        f"{server.url}/v2/models/breast-cancer/infer",
        json=body,
        headers={"Authorization": f"Bearer {api_key}", "x-request-id": "trace-42"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "trace-42"
    assert response.headers["x-modelport-revision"] == "r1"
    payload = response.json()
    assert payload["model_name"] == "breast-cancer"
    assert payload["model_version"] == "r1"
    assert payload["id"] == "req-1"
    outputs = {out["name"]: out for out in payload["outputs"]}
    assert outputs["label"]["shape"] == [2]
    assert outputs["probabilities"]["shape"] == [2, 2]
    assert sum(outputs["probabilities"]["data"][:2]) == pytest.approx(1.0, abs=1e-5)


def test_tritonclient_binary_and_json(server: RunningServer, api_key: str, samples) -> None:
    rows, target = samples
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {api_key}"}
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("breast-cancer", headers=headers)
    metadata = client.get_model_metadata("breast-cancer", headers=headers)
    assert metadata["inputs"][0]["name"] == "input"

    for binary in (True, False):
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        requested = [
            triton.InferRequestedOutput("label", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        # tritonclient writes Inference-Header-Content-Length into the dict it is given,
        # so each call gets a fresh one.
        result = client.infer("breast-cancer", [tensor], outputs=requested, headers=dict(headers))
        labels = result.as_numpy("label")
        probabilities = result.as_numpy("probabilities")
        assert labels.shape == (40,)
        assert probabilities.shape == (40, 2)
        assert (labels == target).mean() >= 0.9  # the real model, not a stub
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    client.close()


def test_project_client_infer(data_client: Client, samples) -> None:
    rows, target = samples
    outputs = data_client.infer("breast-cancer", {"input": rows})
    assert outputs["label"].shape == (40,)
    assert (outputs["label"] == target).mean() >= 0.9
    assert data_client.model_metadata("breast-cancer")["versions"] == ["r1"]


def test_models_list_over_api(admin: Client) -> None:
    assert "breast-cancer" in [m["name"] for m in admin.list_models()]
