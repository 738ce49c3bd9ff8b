"""Every bad input gets the right status, a message saying what is wrong, and changes nothing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import MAX_BODY_BYTES, RunningServer

pytestmark = pytest.mark.integration

ROW = [0.5] * 30


def _infer_body(name: str = "input", datatype: str = "FP32", shape=(1, 30), data=None) -> dict:
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": data or ROW}]
    }


@pytest.fixture
def v2(server: RunningServer, api_key: str):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        yield client


def _stored(server: RunningServer) -> set[str]:
    return {p.name for p in (server.home / "artifacts" / "sha256").iterdir()}


def _staging_empty(server: RunningServer) -> bool:
    return not any((server.home / "artifacts" / "staging").iterdir())


# -- data plane ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"inputs": []}', 400, "non-empty 'inputs'"),
        (_infer_body(name="features"), 400, "unknown input 'features'"),
        (_infer_body(shape=(1, 29), data=[0.5] * 29), 400, "expects [-1, 30]"),
        (_infer_body(datatype="FP64"), 400, "datatype FP64, but the model expects FP32"),
        (_infer_body(datatype="FLOAT"), 400, "unknown datatype 'FLOAT'"),
        (_infer_body(shape=(2, 30)), 400, "has 30 values, but shape [2, 30] needs 60"),
        (_infer_body(data=["a"] * 30), 400, "does not fit datatype FP32"),
    ],
)
def test_bad_inference_requests(v2: httpx.Client, body, status: int, fragment: str) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = v2.post("/v2/models/breast-cancer/infer", **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    # The replica stays healthy: the next good request works.
    assert v2.post("/v2/models/breast-cancer/infer", json=_infer_body()).status_code == 200


def test_unknown_endpoint_is_404(v2: httpx.Client) -> None:
    response = v2.post("/v2/models/no-such-model/infer", json=_infer_body())
    assert response.status_code == 404
    assert response.json() == {"error": "endpoint 'no-such-model' does not exist"}
    assert v2.get("/v2/models/breast-cancer/versions/7").status_code == 404
    assert v2.get("/v2/nothing").status_code == 404


def test_body_over_limit_is_413(v2: httpx.Client) -> None:
    response = v2.post("/v2/models/breast-cancer/infer", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer mp_wrong"}, {"Authorization": "Basic abc"}],
)
def test_data_plane_needs_a_valid_key(server: RunningServer, headers) -> None:
    for method, path in [
        ("POST", "/v2/models/breast-cancer/infer"),
        ("GET", "/v2/models/breast-cancer"),
        ("GET", "/v2/models/breast-cancer/ready"),
        ("GET", "/v2"),
    ]:
        response = httpx.request(method, server.url + path, headers=headers, json=_infer_body())
        assert response.status_code == 401, (path, response.text)
        assert "API key" in response.json()["error"]


def test_health_is_open(server: RunningServer) -> None:
    for path in ("/healthz", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 200


def test_admin_token_is_not_an_api_key(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.url}/v2/models/breast-cancer",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert response.status_code == 401


def test_revoked_key_is_refused_at_once(server: RunningServer, admin: Client) -> None:
    created = admin.create_key("default", "short-lived")
    with server.client(created["key"]) as user:
        assert user.model_metadata("breast-cancer")["name"] == "breast-cancer"
        assert admin.revoke_key(created["id"])["revoked_at"] is not None
        with pytest.raises(ModelportClientError) as info:
            user.model_metadata("breast-cancer")
    assert info.value.status == 401
    listed = {k["id"]: k for k in admin.list_keys()}
    assert "key" not in listed[created["id"]]  # the secret is never shown again


# -- control plane ---------------------------------------------------------------------------


def test_control_plane_needs_the_admin_token(server: RunningServer, api_key: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {api_key}"}):
        for path in ("/api/v1/models", "/api/v1/endpoints", "/api/v1/keys", "/api/v1/openapi.json"):
            response = httpx.get(server.url + path, headers=headers)
            # An API key is known (it may read its project's usage), but may do nothing else.
            expected = (403, "forbidden") if api_key in str(headers) else (401, "unauthorized")
            assert response.status_code == expected[0], (path, headers)
            assert response.json()["error"]["code"] == expected[1]
    ok = httpx.get(
        f"{server.url}/api/v1/openapi.json",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert ok.status_code == 200
    assert "/api/v1/endpoints" in ok.json()["paths"]


def test_malformed_and_invalid_json(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}", "content-type": "application/json"}
    bad = httpx.post(f"{server.url}/api/v1/models", content=b"{oops", headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"
    unknown = httpx.post(
        f"{server.url}/api/v1/models",
        json={"name": "x", "task": "tabular", "colour": "blue"},
        headers=headers,
    )
    assert unknown.status_code == 422
    assert "colour" in unknown.json()["error"]["message"]
    wrong_task = httpx.post(
        f"{server.url}/api/v1/models", json={"name": "x", "task": "poetry"}, headers=headers
    )
    assert wrong_task.status_code == 422
    assert "task" in wrong_task.json()["error"]["message"]


def test_duplicate_and_invalid_names(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as dup:
        admin.create_model("breast-cancer", "tabular")
    assert dup.value.status == 409
    assert "already exists" in dup.value.message
    with pytest.raises(ModelportClientError) as invalid:
        admin.create_model("Bad Name!", "tabular")
    assert invalid.value.status == 400
    with pytest.raises(ModelportClientError) as dup_endpoint:
        admin.create_endpoint("breast-cancer", "breast-cancer:1")
    assert dup_endpoint.value.status == 409


def test_register_missing_path_changes_nothing(server: RunningServer, admin: Client) -> None:
    admin.create_model("missing-path", "tabular")
    before = _stored(server)
    with pytest.raises(ModelportClientError) as info:
        admin.create_version("missing-path", "onnx", artifact_path="/nonexistent/model.onnx")
    assert info.value.status == 400
    assert "does not exist" in info.value.message
    assert admin.get_model("missing-path")["versions"] == []
    assert _stored(server) == before
    assert _staging_empty(server)


def test_unknown_runtime_changes_nothing(server: RunningServer, admin: Client, tmp_path) -> None:
    admin.create_model("unknown-runtime", "tabular")
    before = _stored(server)
    onnx_file = next((server.home / "demo").rglob("model.onnx"))
    with pytest.raises(ModelportClientError) as info:
        admin.create_version("unknown-runtime", "tensorflow", artifact_path=str(onnx_file))
    assert info.value.status == 400
    assert "unknown runtime 'tensorflow'" in info.value.message
    assert "onnx" in info.value.message  # says what to use instead
    assert admin.get_model("unknown-runtime")["versions"] == []
    assert _stored(server) == before


def test_unreadable_artifact_is_refused(server: RunningServer, admin: Client, tmp_path) -> None:
    admin.create_model("not-onnx", "tabular")
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"this is not a model")
    before = _stored(server)
    with pytest.raises(ModelportClientError) as info:
        admin.create_version("not-onnx", "onnx", artifact_path=str(junk))
    assert info.value.status == 400
    assert "not a valid ONNX model" in info.value.message
    assert _stored(server) == before  # the just-ingested artifact was removed again
    assert admin.get_model("not-onnx")["versions"] == []


def test_archive_escaping_the_store_is_refused(server: RunningServer) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"evil"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    before = _stored(server)
    response = httpx.post(
        f"{server.url}/api/v1/artifacts",
        params={"filename": "evil", "archive": "true"},
        content=buffer.getvalue(),
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert response.status_code == 400
    assert "escapes the artifact directory" in response.json()["error"]["message"]
    assert _stored(server) == before
    assert _staging_empty(server)
    assert not (server.home / "escape.txt").exists()
    assert not (server.home / "artifacts" / "escape.txt").exists()


def test_unknown_artifact_digest(admin: Client) -> None:
    admin.create_model("ghost", "tabular")
    with pytest.raises(ModelportClientError) as info:
        admin.create_version("ghost", "onnx", artifact_digest="sha256:" + "0" * 64)
    assert info.value.status == 404
    with pytest.raises(ModelportClientError) as malformed:
        admin.create_version("ghost", "onnx", artifact_digest="md5:abc")
    assert malformed.value.status == 400


def test_endpoint_for_unknown_model_creates_nothing(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as info:
        admin.create_endpoint("orphan", "no-such-model@champion")
    assert info.value.status == 404
    with pytest.raises(ModelportClientError) as alias:
        admin.create_endpoint("orphan", "breast-cancer@nonexistent")
    assert alias.value.status == 404
    assert "orphan" not in [e["name"] for e in admin.list_endpoints()]


def test_deleting_what_an_endpoint_uses_is_409(admin: Client) -> None:
    with pytest.raises(ModelportClientError) as model:
        admin.delete_model("breast-cancer")
    assert model.value.status == 409
    assert "breast-cancer" in model.value.details["endpoints"]
    with pytest.raises(ModelportClientError) as version:
        admin.delete_version("breast-cancer", 1)
    assert version.value.status == 409
    assert "in use by endpoint(s) breast-cancer" in version.value.message
    assert admin.get_model("breast-cancer")["versions"][0]["version"] == 1


def test_unknown_control_route_uses_the_error_shape(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.url}/api/v1/nothing", headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_missing_path_for_client_upload(admin: Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        admin.upload_artifact(tmp_path / "absent.onnx")


def test_control_plane_body_over_limit_is_413(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/models",
        content=b"{" + b" " * MAX_BODY_BYTES + b"}",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_odd_request_ids_and_customers_are_still_metered(
    server: RunningServer, api_key: str, admin: Client
) -> None:
    # A client must not be able to skip metering (or get a 500) with a strange header.
    headers = {"Authorization": f"Bearer {api_key}".encode(), "x-request-id": b"\xff\xfebad"}
    before = len(admin.get_usage(1000))
    response = httpx.post(
        f"{server.url}/v2/models/breast-cancer/infer", json=_infer_body(), headers=headers
    )
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert len(generated) == 32  # the gateway made its own
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "chat-small",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2,
        },
        headers={**headers, "x-modelport-customer": b"acme\xff"},
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    records = admin.get_usage(1000)
    assert len(records) >= before + 2
    assert {r["request_id"] for r in records} >= {generated, chat.headers["x-request-id"]}
    chat_record = next(r for r in records if r["request_id"] == chat.headers["x-request-id"])
    assert chat_record["customer"].startswith("acme")
