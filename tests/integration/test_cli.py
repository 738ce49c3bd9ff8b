"""The CLI as a user types it, against the running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client
from modelport.demo import build_demo
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    free_port,
)

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def cli(server: RunningServer):
    def run(*args: str, token: str | None = None):
        return runner.invoke(
            app, [*args, "--url", server.url, "--token", token or server.admin_token]
        )

    return run


def test_register_alias_deploy_and_delete(
    cli, admin: Client, data_client: Client, tmp_path: Path
) -> None:
    model = build_demo(tmp_path).model
    result = cli(
        "models",
        "register",
        "cli-model",
        str(model),
        "--task",
        "tabular",
        "--runtime",
        "onnx",
        "--metrics",
        '{"accuracy": 0.9}',
        "--json",
    )
    assert result.exit_code == 0, result.output
    version = json.loads(result.output)
    assert version["version"] == 1 and version["metrics"] == {"accuracy": 0.9}

    assert cli("models", "alias", "cli-model", "prod", "1").exit_code == 0
    listed = cli("models", "list", "--json")
    assert {"name": "cli-model", "aliases": {"prod": 1}}.items() <= next(
        m for m in json.loads(listed.output) if m["name"] == "cli-model"
    ).items()

    created = cli("endpoints", "create", "cli-ep", "--model", "cli-model@prod", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["status"] == "ready"
    assert data_client.infer("cli-ep", {"input": [[1.0] * 30]})["label"].shape == (1,)

    shown = json.loads(cli("endpoints", "show", "cli-ep").output)
    assert shown["model"] == "cli-model" and shown["version"] == 1
    in_use = cli("models", "delete", "cli-model")
    assert in_use.exit_code == 1 and "in use by endpoint(s) cli-ep" in in_use.output
    assert cli("endpoints", "delete", "cli-ep").exit_code == 0
    assert cli("models", "delete", "cli-model").exit_code == 0
    assert "cli-model" not in [m["name"] for m in admin.list_models()]


def test_keys_create_prints_the_key_once(cli, server: RunningServer) -> None:
    result = cli("keys", "create", "--project", "default", "--name", "cli")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("mp_")
    with Client(server.url, key) as user:
        assert user.model_metadata("breast-cancer")["name"] == "breast-cancer"
    listed = cli("keys", "list", "--json").output
    assert key not in listed and key[:11] in listed


def test_errors_exit_non_zero_with_a_message(cli, tmp_path: Path) -> None:
    missing = cli(
        "models",
        "register",
        "x",
        str(tmp_path / "nope.onnx"),
        "--task",
        "tabular",
        "--runtime",
        "onnx",
    )
    assert missing.exit_code == 1 and "does not exist" in missing.output
    unauthorized = cli("models", "list", token="wrong")
    assert unauthorized.exit_code == 1 and "invalid admin token" in unauthorized.output
    unknown = cli("endpoints", "show", "ghost")
    assert unknown.exit_code == 1 and "endpoint 'ghost' does not exist" in unknown.output
    down = runner.invoke(
        app, ["models", "list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x"]
    )
    assert down.exit_code == 2 and "cannot reach Modelport" in down.output


def test_demo_build_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "breast-cancer" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9
    header = (tmp_path / "breast-cancer" / "reference.csv").read_text().splitlines()[0]
    assert header.startswith("mean radius,")


def test_apply_diff_and_steer_a_rollout(cli, admin: Client, tmp_path: Path) -> None:
    digest = admin.get_model("breast-cancer")["versions"][0]["artifact_digest"]
    admin.create_model("cli-roll", "tabular")
    for _ in range(2):
        admin.create_version("cli-roll", "onnx", artifact_digest=digest)
    intent = tmp_path / "modelport.yaml"
    held = "rollout:\n  strategy: canary\n  steps: [25, 100]\n  interval: 10m\n"
    intent.write_text(f"endpoint: cli-roll\ntask: tabular\nmodel: cli-roll:1\n{held}")
    created = cli("apply", "-f", str(intent))
    assert created.exit_code == 0, created.output
    assert "create endpoint 'cli-roll' with revision r1" in created.output
    admin.wait_ready("cli-roll")
    assert cli("diff", "-f", str(intent)).exit_code == 0  # nothing would change

    intent.write_text(intent.read_text().replace("cli-roll:1", "cli-roll:2"))
    preview = cli("diff", "-f", str(intent))
    assert preview.exit_code == 1 and "~ model: cli-roll:1 -> cli-roll:2" in preview.output
    assert cli("apply", "-f", str(intent)).exit_code == 0
    admin.wait_rollout("cli-roll", ("progressing",), timeout=60)
    status = cli("rollout", "status", "cli-roll")
    assert "r1 -> r2 by canary: progressing step 1/2" in status.output
    assert "r2 takes 25% of traffic" in status.output
    assert "paused" in cli("rollout", "pause", "cli-roll").output
    again = cli("rollout", "pause", "cli-roll")
    assert again.exit_code == 1 and "error 409" in again.output and "is paused" in again.output
    assert "progressing" in cli("rollout", "resume", "cli-roll").output
    assert "promoted" in cli("rollout", "promote", "cli-roll").output
    history = cli("rollout", "history", "cli-roll")
    assert "promoted by admin" in history.output and "created" in history.output
    none = cli("rollout", "abort", "cli-roll")
    assert none.exit_code == 1 and "no rollout in progress to abort" in none.output

    intent.write_text(intent.read_text() + "surprise: 1\n")
    bad = cli("apply", "-f", str(intent))
    assert bad.exit_code == 1 and "surprise (line 8): unknown field" in bad.output
    missing = cli("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    admin.delete_endpoint("cli-roll")
    admin.delete_model("cli-roll")


CRASHES = """
class Scorer:
    def __init__(self):
        raise RuntimeError("this version cannot load its weights")
"""
GOOD = """
class Scorer:
    def predict(self, inputs):
        return {"score": inputs["features"].sum(axis=1)}
"""
SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own, with one demo endpoint: fast to start."""
    env = {**BREAST_CANCER_ONLY, "MODELPORT_ROLLOUT_TICK_S": "0.1"}
    with demo_server(tmp_path_factory.mktemp("cli-wait") / "home", env=env) as running:
        yield running


def test_apply_wait_returns_once_the_endpoint_serves(small: RunningServer, tmp_path: Path) -> None:
    with small.client() as admin:
        digest = admin.get_model("breast-cancer")["versions"][0]["artifact_digest"]
        admin.create_model("waited", "tabular")
        admin.create_version("waited", "onnx", artifact_digest=digest)
        key = str(admin.create_key("default", "wait")["key"])
    intent = tmp_path / "modelport.yaml"
    intent.write_text("endpoint: waited\ntask: tabular\nmodel: waited:1\n")
    args = ["--url", small.url, "--token", small.admin_token]
    done = runner.invoke(app, ["apply", "-f", str(intent), "--wait", "--timeout", "120", *args])
    assert done.exit_code == 0, done.output
    assert "endpoint 'waited' serves r1" in done.output
    with Client(small.url, key) as data:  # at once: no 503 while a replica starts
        assert data.infer("waited", {"input": [[1.0] * 30]})["label"].shape == (1,)


def test_apply_wait_exits_non_zero_naming_why_a_rollout_was_rolled_back(
    small: RunningServer, tmp_path: Path
) -> None:
    with small.client() as admin:
        admin.create_model("fragile", "custom")
        for number, code in enumerate((GOOD, CRASHES), start=1):
            directory = tmp_path / f"v{number}"
            directory.mkdir()
            (directory / "model.py").write_text(code)
            admin.create_version(
                "fragile",
                "python",
                artifact_path=str(directory),
                runtime_options={"class": "model:Scorer"},
                signature=SIGNATURE,
            )
    intent = tmp_path / "modelport.yaml"
    intent.write_text("endpoint: fragile\ntask: custom\nmodel: fragile:1\n")
    args = ["--url", small.url, "--token", small.admin_token]
    first = runner.invoke(app, ["apply", "-f", str(intent), "--wait", *args])
    assert first.exit_code == 0, first.output
    intent.write_text(intent.read_text().replace("fragile:1", "fragile:2"))
    rolled = runner.invoke(app, ["apply", "-f", str(intent), "--wait", "--timeout", "120", *args])
    assert rolled.exit_code == 3, rolled.output
    assert "rolled back" in rolled.output and "cannot load its weights" in rolled.output
    short = runner.invoke(app, ["apply", "-f", str(intent), "--wait", "--timeout", "0", *args])
    assert short.exit_code == 4 and "timed out" in short.output, short.output
    with small.client() as admin:
        admin.rollout_action("fragile", "abort")
