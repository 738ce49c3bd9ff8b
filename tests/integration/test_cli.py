"""The CLI as a user types it, against the running server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client
from modelport.demo import build_demo
from tests.integration.conftest import RunningServer, free_port

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
