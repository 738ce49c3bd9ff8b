"""docs/rollouts.md's walkthrough runs exactly as written (only the address and home differ)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BREAST_CANCER_ONLY, RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[RunningServer]:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_ROLLOUT_TICK_S": "0.1"}
    running = start_server(tmp_path / ".modelport", "--demo", env=env)
    try:
        with running.client() as admin:
            admin.wait_ready("breast-cancer")
        yield running
    finally:
        stop_server(running)


def test_walkthrough(fresh: RunningServer) -> None:
    text = (ROOT / "docs" / "rollouts.md").read_text()
    match = re.search(r"<!-- rollouts:walkthrough -->\n```bash\n(.*?)```", text, re.S)
    assert match, "docs/rollouts.md lost its walkthrough"
    script = match.group(1).replace("source .venv/bin/activate\n", "")
    work = fresh.home.parent
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,  # where .modelport/ and breast-cancer.yaml are
        env={
            **os.environ,
            "MODELPORT_HOME": str(fresh.home),
            "MODELPORT_URL": fresh.url,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shell.returncode == 0, shell.stdout + shell.stderr
    output = shell.stdout
    assert "~ model: breast-cancer:1 -> breast-cancer:2" in output
    assert "new revision r2 (breast-cancer:2); roll out from r1 by canary" in output
    assert "rollout promoted" in output
    assert "is up to date" in output  # the second apply
    with fresh.client() as admin:
        rollout = admin.rollout("breast-cancer")
        assert rollout["state"] == "rolled_back"
        assert "after promotion" in rollout["reason"]
        endpoint = admin.get_endpoint("breast-cancer")
        assert endpoint["stable_revision"] == "r1"
        assert [r["name"] for r in endpoint["revisions"]] == ["r1"]
