"""Scoped API keys against a real server, with the official clients: a key of one project
cannot call, list or see another project's endpoints; scopes, pinning, customers, rotation,
expiry, the auth-failure throttle, and bad key requests that store nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from modelport.client import Client, ModelportClientError

from .conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    ensure_project,
    wait_for,
)

pytestmark = pytest.mark.integration

FAILURES_PER_MINUTE = 5
INFER = "/v2/models/breast-cancer/infer"
BODY = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.1] * 30}]}
PROJECT_B = """\
endpoint: bc-b
project: proj-b
task: tabular
model: breast-cancer:1
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE)}
    home = tmp_path_factory.mktemp("scopes") / "home"
    with demo_server(home, "breast-cancer", env=env) as running:
        ensure_project(running, "proj-b", "blue")
        with running.client() as admin:
            assert admin.apply(PROJECT_B)["action"] == "created"
            admin.wait_ready("bc-b")
        yield running


@pytest.fixture(scope="module")
def admin(srv: RunningServer) -> Iterator[Client]:
    with srv.client() as client:
        yield client


def _key(admin: Client, project: str = "default", **settings: Any) -> str:
    return str(admin.create_key(project, "scoped", **settings)["key"])


def _http(srv: RunningServer, key: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}, **kwargs)


def _triton(srv: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(srv.url.removeprefix("http://"))


def _infer_triton(srv: RunningServer, key: str, endpoint: str) -> Any:
    tensor = triton.InferInput("input", [1, 30], "FP32")
    tensor.set_data_from_numpy(np.full((1, 30), 0.1, dtype=np.float32))
    return _triton(srv).infer(endpoint, [tensor], headers={"authorization": f"Bearer {key}"})


def test_a_key_of_one_project_cannot_call_list_or_see_another_projects_endpoints(
    srv: RunningServer, admin: Client
) -> None:
    key_default, key_b = _key(admin), _key(admin, "proj-b")
    assert admin.list_keys("proj-b")[-1]["team"] == "blue"  # the project's team

    # Listing (official openai client): each key sees only what it may call.
    for key, visible in ((key_default, {"breast-cancer"}), (key_b, {"bc-b"})):
        models = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key).models.list()
        assert {m.id for m in models.data} == visible

    # Calling (official tritonclient): its own project's endpoint answers, the other's is 403
    # naming the endpoint and who may call it.
    assert _infer_triton(srv, key_b, "bc-b").as_numpy("label") is not None
    with pytest.raises(InferenceServerException) as refused:
        _infer_triton(srv, key_default, "bc-b")
    assert refused.value.status() == "403"
    assert "endpoint 'bc-b' is not open to API key" in refused.value.message()
    assert "project:proj-b" in refused.value.message()

    # Seeing: metadata and readiness are refused too.
    client = _triton(srv)
    headers = {"authorization": f"Bearer {key_default}"}
    with pytest.raises(InferenceServerException, match="not open to API key"):
        client.get_model_metadata("bc-b", headers=headers)
    with _http(srv, key_default) as http:
        assert http.get("/v2/models/bc-b/ready").status_code == 403
        assert http.get("/v2/models/bc-b").status_code == 403
        assert http.get("/v2/models/breast-cancer/ready").status_code == 200

    # The endpoint's intent opens it to the default project: the same key now calls it.
    assert admin.apply(PROJECT_B + "consumers: [project:default]\n")["action"] == "updated"
    with _http(srv, key_default) as http:
        wait_for(
            lambda: http.post("/v2/models/bc-b/infer", json=BODY).status_code == 200,
            timeout=10,
            message="consumers published",
        )
    models = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key_default).models.list()
    assert {m.id for m in models.data} == {"breast-cancer", "bc-b"}
    admin.apply(PROJECT_B)  # closed again for the other tests


def test_scope_limits_a_key_to_its_endpoints(srv: RunningServer, admin: Client) -> None:
    key = _key(admin, scopes=["bc-other"])
    with _http(srv, key) as http:
        refused = http.post(INFER, json=BODY)
    assert refused.status_code == 403
    message = refused.json()["error"]
    assert "scoped to endpoints bc-other" in message and "'breast-cancer'" in message
    listed = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key).models.list()
    assert listed.data == []
    scoped = _key(admin, scopes=["breast-cancer"])
    with _http(srv, scoped) as http:
        assert http.post(INFER, json=BODY).status_code == 200


def test_pinning_a_revision_needs_the_pin_permission(srv: RunningServer, admin: Client) -> None:
    pinned = "/v2/models/breast-cancer/versions/r1/infer"
    with _http(srv, _key(admin)) as http:
        refused = http.post(pinned, json=BODY)
        assert refused.status_code == 403 and "'pin' permission" in refused.json()["error"]
        assert http.get("/v2/models/breast-cancer/versions/r1").status_code == 403
    # OpenAI's "endpoint@rN" is refused the same way, before anything else is looked at.
    chat = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=_key(admin), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="'pin' permission"):
        chat.chat.completions.create(model="breast-cancer@r1", messages=[])
    with _http(srv, _key(admin, permissions=["pin"])) as http:
        answer = http.post(pinned, json=BODY)
        assert answer.status_code == 200 and answer.headers["x-modelport-revision"] == "r1"


def test_naming_a_customer_is_a_privilege(srv: RunningServer, admin: Client) -> None:
    acme = {"x-modelport-customer": "acme"}
    with _http(srv, _key(admin)) as http:
        refused = http.post(INFER, json=BODY, headers=acme)
        assert refused.status_code == 403 and "X-Modelport-Customer" in refused.json()["error"]
        assert http.post(INFER, json=BODY).status_code == 200  # no customer named: fine
    with _http(srv, _key(admin, customers=["acme"])) as http:
        assert http.post(INFER, json=BODY, headers=acme).status_code == 200
        other = http.post(INFER, json=BODY, headers={"x-modelport-customer": "globex"})
        assert other.status_code == 403 and "'globex'" in other.json()["error"]
    with _http(srv, _key(admin, permissions=["any_customer"])) as http:
        assert http.post(INFER, json=BODY, headers={"x-modelport-customer": "x"}).status_code == 200
    # OpenAI's ``user`` names a customer too; the 403 names the field.
    plain = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=_key(admin), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        plain.embeddings.create(model="breast-cancer", input="x", user="acme")
    assert caught.value.body["param"] == "user"  # type: ignore[index]


def test_denials_are_audited(srv: RunningServer, admin: Client) -> None:
    key = admin.create_key("proj-b", "audited")
    with _http(srv, key["key"]) as http:
        assert http.post(INFER, json=BODY).status_code == 403

    def recorded() -> bool:
        entries = httpx.get(
            f"{srv.url}/api/v1/audit",
            params={"actor": f"key:{key['id']}", "action": "access.denied"},
            headers={"authorization": f"Bearer {srv.admin_token}"},
        )
        assert entries.status_code == 200, entries.text
        return any(e["target"] == "endpoint:breast-cancer" for e in entries.json())

    wait_for(recorded, timeout=15, message="the denied call in the audit log")


def test_rotation_keeps_the_old_key_working_for_the_grace_period(
    srv: RunningServer, admin: Client
) -> None:
    old = admin.create_key("default", "rotated", scopes=["breast-cancer"], permissions=["pin"])
    new = admin.rotate_key(old["id"], grace=2)
    assert new["key"] != old["key"] and new["rotated_from"] == old["id"]
    assert (new["scopes"], new["permissions"]) == (["breast-cancer"], ["pin"])
    listed = {k["id"]: k for k in admin.list_keys("default")}
    assert listed[old["id"]]["replaced_by"] == new["id"]
    assert "key" not in listed[new["id"]]  # shown once, never listed
    with _http(srv, old["key"]) as before, _http(srv, new["key"]) as after:
        assert before.post(INFER, json=BODY).status_code == 200
        assert after.post(INFER, json=BODY).status_code == 200
        time.sleep(2.5)
        expired = before.post(INFER, json=BODY)
        assert expired.status_code == 401 and "expired at" in expired.json()["error"]
        assert after.post(INFER, json=BODY).status_code == 200
    with pytest.raises(ModelportClientError) as again:
        admin.rotate_key(old["id"])
    assert again.value.status == 409


def test_an_expired_key_is_refused_with_a_clear_401(srv: RunningServer, admin: Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    key = admin.create_key("default", "short", expires_at=expires)
    with _http(srv, key["key"]) as http:
        assert http.post(INFER, json=BODY).status_code == 200
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.3)
        refused = http.post(INFER, json=BODY)
    assert refused.status_code == 401
    assert f"API key '{key['id']}' expired at" in refused.json()["error"]


def test_a_revoked_key_is_refused_at_once(srv: RunningServer, admin: Client) -> None:
    key = admin.create_key("default", "revoked")
    admin.revoke_key(key["id"])
    with _http(srv, key["key"]) as http:
        assert http.post(INFER, json=BODY).status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"project": "nope"}, 404, "project"),
        ({"project": "Not A Project"}, 400, "project"),
        ({"permissions": ["pin", "sudo"]}, 400, "permissions"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, 400, "expires_at"),
        ({"expires_at": "tomorrow"}, 422, "expires_at"),
        ({"scopes": ["Bad Name"]}, 400, "scopes"),
        ({"customers": ["*"]}, 400, "customers"),
        ({"team": "blue"}, 400, "team"),  # project default belongs to team default
        ({"scopes": "breast-cancer"}, 422, "scopes"),
    ],
)
def test_bad_key_requests_name_the_field_and_store_nothing(
    srv: RunningServer, admin: Client, body: dict[str, Any], status: int, field: str
) -> None:
    before = len(admin.list_keys())
    headers = {"authorization": f"Bearer {srv.admin_token}"}
    request = {"project": "default", "name": "bad", **body}
    answer = httpx.post(f"{srv.url}/api/v1/keys", json=request, headers=headers)
    assert answer.status_code == status, answer.text
    assert field in answer.text
    assert len(admin.list_keys()) == before


def test_repeated_auth_failures_from_one_address_are_throttled(
    srv: RunningServer, admin: Client
) -> None:
    good = _key(admin)
    # From another loopback address, so that the rest of the suite (127.0.0.1) is unaffected.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=srv.url, transport=transport) as other:
        for _ in range(FAILURES_PER_MINUTE):
            wrong = other.post(INFER, json=BODY, headers={"authorization": "Bearer mp_wrong"})
            assert wrong.status_code == 401
        throttled = other.post(INFER, json=BODY, headers={"authorization": f"Bearer {good}"})
        assert throttled.status_code == 429
        retry = int(throttled.headers["retry-after"])
        assert 0 < retry <= 60
        # Other addresses are served as before.
        with _http(srv, good) as http:
            assert http.post(INFER, json=BODY).status_code == 200
        time.sleep(retry + 0.5)
        recovered = other.post(INFER, json=BODY, headers={"authorization": f"Bearer {good}"})
        assert recovered.status_code == 200
