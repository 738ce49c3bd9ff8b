"""No token, key or secret ever reaches a log, even at debug level and on failure paths."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import BREAST_CANCER_ONLY, start_server, stop_server

pytestmark = pytest.mark.integration

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}


def test_logs_never_contain_secrets(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_server(
        home, "--demo", env={**BREAST_CANCER_ONLY, "MODELPORT_LOG_LEVEL": "debug"}
    )
    secrets = {"upstream secret": "sk-upstream-" + "7" * 24, "wrong key": "mp_wrong_" + "x" * 30}
    try:
        with running.client() as admin:
            admin.wait_ready("breast-cancer", timeout=120)
            secrets["admin token"] = running.admin_token
            secrets["api key"] = admin.create_key("default", "logs")["key"]
            admin.put_secret("upstream", secrets["upstream secret"])
            admin.create_model("remote", "tabular")
            # Nothing listens there: every call fails, and failures get logged.
            admin.create_version(
                "remote",
                "v2-upstream",
                runtime_options={"url": "http://127.0.0.1:9/", "credential": "upstream"},
            )
            admin.create_endpoint("remote", "remote:1")
        with httpx.Client(base_url=running.url) as http:
            good = {"authorization": f"Bearer {secrets['api key']}"}
            assert http.post("/v2/models/breast-cancer/infer", json=ROW, headers=good).is_success
            assert http.post("/v2/models/remote/infer", json=ROW, headers=good).status_code == 503
            bad = {"authorization": f"Bearer {secrets['wrong key']}"}
            assert http.post("/v2/models/remote/infer", json=ROW, headers=bad).status_code == 401
            assert http.get("/api/v1/endpoints", headers=bad).status_code == 401
            garbage = {**good, "content-type": "application/json"}
            reply = http.post("/v2/models/breast-cancer/infer", content=b"{", headers=garbage)
            assert reply.status_code == 400
    finally:
        stop_server(running)
    logs = [running.log, *sorted((home / "logs").rglob("*"))]
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())
    assert "remote" in text  # the logs do say what happened
    for what, value in secrets.items():
        assert value not in text, f"the {what} appears in a log"
