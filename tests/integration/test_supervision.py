"""One bad endpoint never harms another; replicas see only what they need.

Each test runs its own small server (the breast-cancer demo only), since several restart it
or break endpoints on purpose.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.tree import DecisionTreeClassifier

from modelport.client import Client
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.integration

# Stand-ins for what an operator exports to the server: none of it may reach a replica.
_SERVER_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-for-the-test",
    "MODELPORT_TEST_SECRET": "fake-modelport-secret",
    "PGPASSWORD": "fake-postgres-password",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server(home: Path) -> Iterator[RunningServer]:
    database = f"sqlite:///{home / 'modelport.db'}"  # the server's own; replicas need none
    env = {**BREAST_CANCER_ONLY, **_SERVER_SECRETS, "MODELPORT_DATABASE_URL": database}
    running = start_server(home, "--demo", env=env)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def admin(server: RunningServer) -> Iterator[Client]:
    with server.client() as client:
        client.wait_ready("breast-cancer")
        yield client


@pytest.fixture
def tree_dir(tmp_path: Path) -> Path:
    data = load_breast_cancer()
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(data.data, data.target)
    directory = tmp_path / "tree"
    directory.mkdir()
    joblib.dump(model, directory / "model.joblib")
    return directory


@pytest.fixture
def vllm_dir(tmp_path: Path) -> Path:
    """A Hugging Face model directory, as a vLLM endpoint is registered with."""
    directory = tmp_path / "hf-model"
    directory.mkdir()
    (directory / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return directory


def _replica(admin: Client, name: str) -> dict[str, Any]:
    replica: dict[str, Any] = admin.get_endpoint(name)["replica_status"][0]
    return replica


def _kill_and_wait_restart(admin: Client, name: str) -> None:
    before = _replica(admin, name)
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        after = _replica(admin, name)
        return after["state"] == "ready" and after["pid"] not in (None, before["pid"])

    wait_for(restarted, timeout=60, message=f"the killed replica of {name} to be restarted")


def _serves(server: RunningServer, admin: Client, name: str) -> None:
    key = admin.create_key("default", f"check-{name}-{os.urandom(3).hex()}")["key"]
    with server.client(key) as client:
        outputs = client.infer(name, {"input": np.full((1, 30), 0.5)})
    assert outputs["label"].shape == (1,)


def test_large_runtime_options_start_and_other_endpoints_recover_meanwhile(
    server: RunningServer, admin: Client, tree_dir: Path
) -> None:
    # 300 KB of options: more than one argv or environment string may hold (128 KB on Linux).
    options = {"notes": "n" * 300_000}
    admin.register(
        "big-options", tree_dir, task="tabular", runtime="sklearn", runtime_options=options
    )
    admin.create_endpoint("big-options", "big-options:1")
    _kill_and_wait_restart(admin, "breast-cancer")  # while the big one starts
    assert admin.wait_ready("big-options", timeout=120)["status"] == "ready"
    _serves(server, admin, "big-options")
    _serves(server, admin, "breast-cancer")


def test_replica_that_cannot_be_spawned_says_why_and_harms_no_other(
    home: Path, server: RunningServer, admin: Client, vllm_dir: Path
) -> None:
    # vLLM is not installed here, so its replica (the 'vllm' program) cannot be spawned at all.
    admin.register("gpu-chat", vllm_dir, task="chat", runtime="vllm")
    admin.create_endpoint("gpu-chat", "gpu-chat:1")

    def failed(client: Client) -> bool:
        endpoint = client.get_endpoint("gpu-chat")
        error = endpoint["replica_status"][0]["last_error"] or ""
        return endpoint["status"] == "failed" and "could not start" in error and "vllm" in error

    wait_for(lambda: failed(admin), timeout=60, message="gpu-chat to report why it fails")
    _kill_and_wait_restart(admin, "breast-cancer")
    _serves(server, admin, "breast-cancer")

    # After a restart of the server, the healthy endpoint comes up all the same.
    stop_server(server)
    restarted = start_server(home, "--demo", env=BREAST_CANCER_ONLY)
    try:
        with restarted.client() as client:
            assert client.wait_ready("breast-cancer", timeout=120)["status"] == "ready"
            wait_for(lambda: failed(client), timeout=60, message="gpu-chat to fail again")
            _serves(restarted, client, "breast-cancer")
    finally:
        stop_server(restarted)


def test_replica_environment_holds_none_of_the_servers_secrets(
    server: RunningServer, admin: Client
) -> None:
    pid = _replica(admin, "breast-cancer")["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert "PATH" in names
    assert "MODELPORT_DATABASE_URL" not in names
    assert not names & set(_SERVER_SECRETS)
    assert not any(name.startswith("MODELPORT_") for name in names), names
    everything = b"\0".join(environ) + Path(f"/proc/{pid}/cmdline").read_bytes()
    for secret in [*_SERVER_SECRETS.values(), server.admin_token]:
        assert secret.encode() not in everything
