"""Environments against a real server: create, list, show, replace and delete; bad input a
4xx naming the field with nothing stored; delete refused while an endpoint runs there; apply
refusing an environment that does not exist and data the environment does not accept; and
the isolation proof: a model that opens a TCP connection to a server this test runs gets
through from the sandbox, and not from an isolated environment, whose memory limit it sees."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.backends.isolation import network_isolated
from modelport.cli import app
from modelport.client import Client, ModelportClientError

from .conftest import BREAST_CANCER_ONLY, RunningServer, demo_server

pytestmark = pytest.mark.integration

runner = CliRunner()

# Reports whether it could connect to 127.0.0.1:PORT (the test's listener) and the address
# space limit it runs under (MB; -1 when unlimited).
PROBE = """
import resource
import socket

import numpy as np


class Probe:
    def predict(self, inputs):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
            connected = 1.0
        except OSError:
            connected = 0.0
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        memory = -1.0 if limit == resource.RLIM_INFINITY else limit / 2**20
        rows = len(inputs["x"])
        return {
            "connected": np.full(rows, connected, dtype=np.float32),
            "memory_mb": np.full(rows, memory, dtype=np.float32),
        }
"""
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [
        {"name": "connected", "datatype": "FP32", "shape": [-1]},
        {"name": "memory_mb", "datatype": "FP32", "shape": [-1]},
    ],
}
MEMORY_MB = 2048  # address space, not resident memory: an interpreter with numpy needs room


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A TCP server on 127.0.0.1 that accepts (and counts) whatever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with demo_server(tmp_path_factory.mktemp("envs") / "home", env=BREAST_CANCER_ONLY) as running:
        yield running


@pytest.fixture(scope="module")
def admin(
    srv: RunningServer, listener: socket.socket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    directory = tmp_path_factory.mktemp("probe")
    port = listener.getsockname()[1]
    (directory / "model.py").write_text(PROBE.replace("PORT", str(port)))
    with srv.client() as client:
        client.create_model("probe", "custom")
        client.create_version(
            "probe",
            "python",
            artifact_path=str(directory),
            runtime_options={"class": "model:Probe"},
            signature=SIGNATURE,
        )
        client.create_environment("vault", "isolated", memory_mb=MEMORY_MB, cpus=1)
        yield client


def _refused(call: Any) -> ModelportClientError:
    with pytest.raises(ModelportClientError) as caught:
        call()
    return caught.value


def _names(admin: Client) -> list[str]:
    return [e["name"] for e in admin.list_environments()]


def _intent(endpoint: str, environment: str, extra: str = "") -> str:
    return (
        f"endpoint: {endpoint}\ntask: custom\nmodel: probe:1\nenvironment: {environment}\n{extra}"
    )


def test_create_list_show_replace_delete(srv: RunningServer, admin: Client) -> None:
    assert _names(admin) == ["production", "sandbox", "vault"]
    vault = admin.get_environment("vault")
    assert (vault["kind"], vault["memory_mb"], vault["cpus"], vault["hardware"]) == (
        "isolated",
        MEMORY_MB,
        1,
        ["cpu"],
    )
    created = admin.create_environment("gpu-lab", "dedicated", hardware=["cpu", "l4", "h100"])
    assert created["sensitivities"] == ["public", "internal", "confidential", "restricted"]
    replaced = admin.replace_environment(
        "gpu-lab", {"kind": "shared", "hardware": ["t4"], "sensitivities": ["public"]}
    )
    assert (replaced["kind"], replaced["hardware"], replaced["sensitivities"]) == (
        "shared",
        ["t4"],
        ["public"],
    )
    env = {"MODELPORT_URL": srv.url, "MODELPORT_TOKEN": srv.admin_token}
    shown = runner.invoke(app, ["environments", "show", "gpu-lab"], env=env)
    assert shown.exit_code == 0 and "t4" in shown.output, shown.output
    deleted = runner.invoke(app, ["environments", "delete", "gpu-lab"], env=env)
    assert deleted.exit_code == 0, deleted.output
    assert "gpu-lab" not in _names(admin)
    made = runner.invoke(
        app,
        ["environments", "create", "cli-lab", "--kind", "isolated", "--memory-mb", "512"],
        env=env,
    )
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["environments", "list", "--json"], env=env)
    assert '"cli-lab"' in listed.output
    admin.delete_environment("cli-lab")
    assert _refused(lambda: admin.get_environment("cli-lab")).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "isolated", "hardware": ["cpu", "tpu-v9"]}, "hardware[1]"),
        ({"name": "x", "kind": "cloud"}, "kind"),
        ({"name": "x", "kind": "shared", "sensitivities": ["secret"]}, "sensitivities[0]"),
        ({"name": "x", "kind": "shared", "memory_mb": 512}, "memory_mb"),
        ({"name": "x", "kind": "isolated", "memory_mb": "512"}, "memory_mb"),
        ({"name": "x", "kind": "isolated", "cpus": 0}, "cpus"),
        ({"name": "auto", "kind": "shared"}, "name"),
        ({"name": "Not A Name", "kind": "shared"}, "name"),
        ({"name": "x", "kind": "shared", "disk_gb": 5}, "disk_gb"),
        ({"kind": "shared"}, "name"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_with_nothing_stored(
    srv: RunningServer, admin: Client, body: dict[str, Any], field: str
) -> None:
    before = admin.list_environments()
    headers = {"authorization": f"Bearer {srv.admin_token}"}
    response = httpx.post(f"{srv.url}/api/v1/environments", json=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert field in response.text, response.text
    assert admin.list_environments() == before


def test_an_unknown_environment_is_refused_at_apply_and_diff(admin: Client) -> None:
    for dry_run in (True, False):
        error = _refused(lambda d=dry_run: admin.apply(_intent("lost", "nowhere"), dry_run=d))
        assert error.status == 400
        assert error.details["param"] == "environment"
        assert error.details["line"] == 4  # endpoint, task, model, environment
        assert error.message.startswith("modelport.yaml line 4: ")
        assert "production, sandbox, vault" in error.message
    assert _refused(lambda: admin.get_endpoint("lost")).status == 404  # nothing stored


def test_hardware_the_environment_does_not_offer_is_refused_at_apply(admin: Client) -> None:
    """Unknown to the catalog, or known but not offered here: a 400 naming the field and its
    line, nothing stored; what the environment offers applies."""
    for hardware in ("quantum-9000", "h100"):
        extra = f"resources:\n  hardware: {hardware}\n"
        for dry_run in (True, False):
            error = _refused(
                lambda d=dry_run, e=extra: admin.apply(_intent("hw", "sandbox", e), dry_run=d)
            )
            assert error.status == 400
            assert error.details["param"] == "resources.hardware"
            assert error.details["line"] == 6  # endpoint, task, model, environment, resources
            assert f"hardware '{hardware}' is not offered by environment 'sandbox'" in (
                error.message
            )
        assert _refused(lambda: admin.get_endpoint("hw")).status == 404
    extra = "resources:\n  hardware: cpu\n"
    assert admin.apply(_intent("hw", "sandbox", extra), dry_run=True)["action"] == "created"


def test_data_the_environment_does_not_accept_is_refused(admin: Client) -> None:
    confidential = "data: {sensitivity: confidential}\n"
    error = _refused(lambda: admin.apply(_intent("leaky", "sandbox", confidential)))
    assert (error.status, error.code) == (403, "policy_denied")
    assert error.details["policy"] == "data-residency"
    # An isolated environment that takes only internal data refuses confidential data too.
    admin.create_environment("internal-lab", "isolated", sensitivities=["internal"])
    try:
        error = _refused(lambda: admin.apply(_intent("leaky", "internal-lab", confidential)))
        assert (error.status, error.code) == (403, "policy_denied")
        assert error.details["rule"] == "environment-accepts-the-data-sensitivity"
    finally:
        admin.delete_environment("internal-lab")
    assert _refused(lambda: admin.get_endpoint("leaky")).status == 404


def _probe(admin: Client, caller: Client, endpoint: str) -> dict[str, float]:
    admin.wait_ready(endpoint, timeout=120)
    outputs = caller.infer(endpoint, {"x": np.zeros((1, 1), dtype=np.float32)})
    return {name: float(values[0]) for name, values in outputs.items()}


def test_an_isolated_replica_cannot_connect_out(srv: RunningServer, admin: Client) -> None:
    assert admin.apply(_intent("probe-open", "sandbox"))["action"] == "created"
    assert admin.apply(_intent("probe-shut", "vault"))["action"] == "created"
    with srv.client(admin.create_key("default", "probe")["key"]) as caller:
        sandbox = _probe(admin, caller, "probe-open")
        isolated = _probe(admin, caller, "probe-shut")
    assert sandbox == {"connected": 1.0, "memory_mb": -1.0}
    assert isolated == {"connected": 0.0, "memory_mb": float(MEMORY_MB)}
    # ... while the gateway still reaches it: the answer above came through it. From the
    # outside too, its worker runs in a network namespace of its own, and its status says
    # nothing went wrong; the sandbox's shares the host's.
    for endpoint, isolated_ns in (("probe-shut", True), ("probe-open", False)):
        [replica] = admin.get_endpoint(endpoint)["replica_status"]
        assert replica["last_error"] is None
        assert network_isolated(replica["pid"]) is isolated_ns


def test_moving_an_endpoint_into_an_isolated_environment_isolates_it(
    srv: RunningServer, admin: Client
) -> None:
    if "probe-open" not in {e["name"] for e in admin.list_endpoints()}:
        admin.apply(_intent("probe-open", "sandbox"))
    moved = admin.apply(_intent("probe-open", "vault"))
    # Its replicas must start again under the limits: a new revision, rolled out.
    assert moved["action"] == "rollout", moved
    assert [c["field"] for c in moved["changes"]] == ["environment"]
    with srv.client(admin.create_key("default", "mover")["key"]) as caller:
        deadline = time.monotonic() + 120
        while True:
            admin.wait_ready("probe-open", timeout=120)
            if _probe(admin, caller, "probe-open")["connected"] == 0.0:
                break
            assert time.monotonic() < deadline, "the moved endpoint still connects out"
            time.sleep(0.5)
    # Applying the same file again changes nothing.
    assert admin.apply(_intent("probe-open", "vault"))["action"] == "unchanged"


def test_delete_is_refused_while_an_endpoint_runs_there(admin: Client) -> None:
    if "probe-shut" not in {e["name"] for e in admin.list_endpoints()}:
        admin.apply(_intent("probe-shut", "vault"))
    error = _refused(lambda: admin.delete_environment("vault"))
    assert error.status == 409
    assert "probe-shut" in error.message
    assert "probe-shut" in admin.get_environment("vault")["endpoints"]
    assert "vault" in _names(admin)


def test_reading_is_open_to_users_and_writing_is_for_admins(srv: RunningServer) -> None:
    with httpx.Client(base_url=srv.url) as http:
        assert http.get("/api/v1/environments").status_code == 401
        response = http.post("/api/v1/environments", json={"name": "x", "kind": "shared"})
        assert response.status_code == 401
