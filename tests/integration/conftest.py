"""A real ``modelport serve --demo`` process, shared by the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.client import Client

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 1024 * 1024
BREAST_CANCER_ONLY = {"MODELPORT_DEMO_MODELS": "breast-cancer"}  # fast starts where one will do
DEMO_ENDPOINTS = ("breast-cancer", "digits", "chat-small", "embed-small", "asr-small")
ALL_KEY_PERMISSIONS = ["pin", "route_by_header", "any_customer"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_token(self) -> str:
        return (self.home / "admin-token").read_text().strip()

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token if token is not None else self.admin_token)


def start_server(home: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    port = free_port()
    log = home.parent / f"{home.name}-server.log"
    environment = {
        **os.environ,
        "MODELPORT_HOME": str(home),
        "MODELPORT_PORT": str(port),
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_HEALTH_INTERVAL_S": "0.2",
        "MODELPORT_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        # Tests register artifacts by path from their tmp_path directories.
        "MODELPORT_ARTIFACT_ROOTS": tempfile.gettempdir(),
        # Every test connects from 127.0.0.1: the suites' deliberate bad keys must not add up
        # to the auth-failure throttle (test_key_scopes sets its own limit).
        "MODELPORT_AUTH_FAILURES_PER_MINUTE": "10000",
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", *args],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", home, process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def demo_server(
    home: Path, *ready: str, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """``modelport serve --demo`` with ``env``, once each endpoint in ``ready`` serves;
    stopped on the way out."""
    running = start_server(home, "--demo", env=env)
    try:
        with running.client() as admin:
            for name in ready:
                admin.wait_ready(name, timeout=180)
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with demo_server(tmp_path_factory.mktemp("srv") / "home", *DEMO_ENDPOINTS) as running:
        yield running


@pytest.fixture(scope="session")
def admin(server: RunningServer) -> Iterator[Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def api_key(admin: Client) -> str:
    # The suites pin revisions, steer by header and bill customers: privileges a key is
    # given explicitly (test_key_scopes proves the refusals without them).
    key: str = admin.create_key("default", "tests", permissions=ALL_KEY_PERMISSIONS)["key"]
    return key


def team_key(server: RunningServer, admin: Client, team: str, name: str, **settings: Any) -> Any:
    """A key whose usage is reported under ``team``: of project ``team``, owned by the team
    (a key's team is its project's)."""
    ensure_project(server, team)
    return admin.create_key(team, name, **settings)


def open_to(
    admin: Client, endpoint: str, model: str, consumers: list[str], task: str = "tabular"
) -> None:
    """Let the keys of other teams or projects call ``endpoint`` (the intent's consumers)."""
    intent = f"endpoint: {endpoint}\ntask: {task}\nmodel: {model}\n"
    intent += f"consumers: [{', '.join(consumers)}]\n"
    assert admin.apply(intent)["action"] in ("updated", "unchanged")


def ensure_project(server: RunningServer, project: str, team: str | None = None) -> None:
    """Team ``team`` (default: the project's name) and ``project`` owned by it, if missing:
    keys and intents name a project that exists."""
    headers = {"authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        team = team or project
        created = http.post("/api/v1/teams", json={"name": team})
        assert created.status_code in (201, 409), created.text
        created = http.post("/api/v1/projects", json={"name": project, "team": team})
        assert created.status_code in (201, 409), created.text


@pytest.fixture(scope="session")
def data_client(server: RunningServer, api_key: str) -> Iterator[Client]:
    with server.client(api_key) as client:
        yield client


def wait_for(predicate, timeout: float = 60.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def model_directory(parent: Path, name: str, source: str) -> Path:
    """A fresh artifact directory ``parent/name`` holding ``source`` as its ``model.py``."""
    directory = parent / name
    directory.mkdir()
    (directory / "model.py").write_text(source)
    return directory


def register_python(
    admin: Client,
    name: str,
    directory: Path,
    cls: str,
    inputs: dict[str, list[int]],
    outputs: dict[str, list[int]],
) -> dict[str, Any]:
    """Register ``directory`` as a custom python model served by ``cls`` (``module:Class``);
    ``inputs`` and ``outputs`` map each FP32 tensor's name to its shape."""

    def tensors(shapes: dict[str, list[int]]) -> list[dict[str, Any]]:
        return [{"name": n, "datatype": "FP32", "shape": s} for n, s in shapes.items()]

    signature = {"inputs": tensors(inputs), "outputs": tensors(outputs)}
    return admin.register(
        name,
        directory,
        task="custom",
        runtime="python",
        runtime_options={"class": cls},
        signature=signature,
    )
