"""The README's quickstart runs exactly as written (only the address and home differ)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- quickstart:{name} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README lost its {name} quickstart block"
    return match.group(1).replace("127.0.0.1:8600", "127.0.0.1:" + "{port}")


def _env(server: RunningServer) -> dict[str, str]:
    return {
        **os.environ,
        "MODELPORT_HOME": str(server.home),
        "MODELPORT_URL": server.url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def test_quickstart_shell_and_python(server: RunningServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    script = _block("bash").replace("{port}", port) + '\nprintf "\\nKEY=%s\\n" "$KEY"\n'
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.strip().splitlines()
    assert "breast-cancer" in shell.stdout  # the endpoints table
    answer = json.loads(lines[-2])
    assert answer["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}
    key = lines[-1].removeprefix("KEY=")

    python = subprocess.run(
        [sys.executable, "-c", _block("python").replace("{port}", port)],
        cwd=ROOT,
        env={**_env(server), "KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert python.returncode == 0, python.stderr
    assert python.stdout.splitlines()[0] == "[0 0 0 0 0]"

    openai_block = subprocess.run(
        [sys.executable, "-c", _block("openai").replace("{port}", port)],
        cwd=ROOT,
        env={**_env(server), "KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert openai_block.returncode == 0, openai_block.stderr
    answer_line, dims = openai_block.stdout.strip().splitlines()[-2:]
    assert "Paris" in answer_line and dims == "384"
