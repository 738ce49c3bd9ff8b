"""One bad endpoint never harms another; replicas see only what they need.

Each test runs its own small server (the breast-cancer demo only), since several restart it
or break endpoints on purpose.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pocketsphinx
import pytest
import soundfile
from sklearn.datasets import load_breast_cancer
from sklearn.tree import DecisionTreeClassifier

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    alive,
    model_directory,
    register_python,
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


# -- long work ----------------------------------------------------------------------------------

_ASR_LIMIT_S = 100
_POCKETSPHINX = str(Path(pocketsphinx.__file__).parent)


@pytest.fixture
def asr_server(tmp_path: Path) -> Iterator[RunningServer]:
    env = {
        "MODELPORT_DEMO_MODELS": "asr-small",
        # Probes give up after 1 s: a replica whose event loop stalls is caught within seconds.
        "MODELPORT_HEALTH_TIMEOUT_S": "1",
        "MODELPORT_MAX_AUDIO_SECONDS": str(_ASR_LIMIT_S),
        "MODELPORT_MAX_BODY_BYTES": str(8 * 1024 * 1024),
        "MODELPORT_UPSTREAM_TIMEOUT_S": "300",
        # The demo's model ships inside the pocketsphinx wheel.
        "MODELPORT_ARTIFACT_ROOTS": os.pathsep.join([tempfile.gettempdir(), _POCKETSPHINX]),
    }
    running = start_server(tmp_path / "home", "--demo", env=env)
    try:
        yield running
    finally:
        stop_server(running)


def _speech(directory: Path, seconds: float) -> bytes:
    """espeak-ng reading a sentence over and over, with short pauses, as a WAV file."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: make test installs it (apt-get install espeak-ng)")
    sentence = directory / "sentence.wav"
    text = "the replica keeps answering its health probe while it transcribes a long recording"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(sentence), text], check=True)
    samples, rate = soundfile.read(sentence, dtype="float32")
    pause = np.zeros(rate // 2, dtype=np.float32)
    repeats = int(seconds * rate / (len(samples) + len(pause))) + 1
    audio = np.concatenate([np.concatenate([samples, pause])] * repeats)[: int(seconds * rate)]
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _transcribe(client: httpx.Client, audio: bytes) -> httpx.Response:
    files = {"file": ("audio.wav", audio, "audio/wav")}
    return client.post("/v1/audio/transcriptions", data={"model": "asr-small"}, files=files)


def test_long_transcription_keeps_the_replica_answering_and_alive(
    asr_server: RunningServer, tmp_path: Path
) -> None:
    with asr_server.client() as admin:
        replica = admin.wait_ready("asr-small", timeout=180)["replica_status"][0]
        key = admin.create_key("default", "asr")["key"]
    long_clip = _speech(tmp_path, 90)
    short_clip = _speech(tmp_path, 4)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=asr_server.url, headers=headers, timeout=300) as client:
        with ThreadPoolExecutor(1) as pool:
            long_request = pool.submit(_transcribe, client, long_clip)
            probes = []
            while not long_request.done():
                # The replica's own health probe, straight to its port, as the supervisor asks.
                started = time.monotonic()
                probe = httpx.get(f"http://{replica['address']}/v2/health/ready", timeout=5)
                probes.append((probe.status_code, time.monotonic() - started))
                if len(probes) == 5:  # a short clip meanwhile is answered, not queued
                    assert _transcribe(client, short_clip).status_code == 200
                time.sleep(0.25)
            long_answer = long_request.result()
        assert long_answer.status_code == 200, long_answer.text
        assert len(long_answer.json()["text"].split()) > 20
        assert len(probes) > 10, "the long clip decoded too fast to show anything"
        assert all(status == 200 for status, _ in probes), probes
        assert max(seconds for _, seconds in probes) < 1.0, probes
        assert _transcribe(client, short_clip).status_code == 200  # right after, too

        too_long = _speech(tmp_path, _ASR_LIMIT_S + 5)
        refused = _transcribe(client, too_long)
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["param"] == "file"
        assert f"at most {_ASR_LIMIT_S} s" in error["message"]
    with asr_server.client() as admin:
        after = admin.get_endpoint("asr-small")["replica_status"][0]
        assert (after["pid"], after["restarts"]) == (replica["pid"], replica["restarts"])

        # Its decoding processes die with it: killed, it leaves nothing behind.
        decoders = _children(replica["pid"])
        assert len(decoders) >= 2
        os.kill(replica["pid"], signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in decoders), timeout=20, message="decoders")
        assert admin.wait_ready("asr-small", timeout=120)["status"] == "ready"


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for t in tasks for c in (t / "children").read_text().split()]


_SPINNER = """
import time

import numpy as np


class Spinner:
    '''Works for x[0] seconds: sleeping (x[1] == 0), or in one native call that holds the
    GIL all along (x[1] == 1), as a C library that never releases it does.'''

    def load(self):
        started = time.perf_counter()
        sum(range(2_000_000))
        self.per_second = 2_000_000 / (time.perf_counter() - started)

    def predict(self, inputs):
        seconds, hold = (float(v) for v in inputs["x"])
        if hold:
            sum(range(int(seconds * self.per_second)))
        else:
            time.sleep(seconds)
        return {"done": np.array([seconds], "f4")}
"""


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[RunningServer]:
    env = {
        **BREAST_CANCER_ONLY,
        "MODELPORT_HEALTH_TIMEOUT_S": "1",
        "MODELPORT_REPLICA_BUSY_GRACE_S": "20",
        "MODELPORT_UPSTREAM_TIMEOUT_S": "120",
    }
    running = start_server(tmp_path / "home", "--demo", env=env)
    try:
        yield running
    finally:
        stop_server(running)


def test_busy_replica_is_not_killed_until_its_grace_runs_out(
    busy_server: RunningServer, tmp_path: Path
) -> None:
    directory = model_directory(tmp_path, "spinner", _SPINNER)
    with busy_server.client() as admin:
        register_python(admin, "spinner", directory, "model:Spinner", {"x": [2]}, {"done": [1]})
        admin.create_endpoint("spinner", "spinner:1")
        before = admin.wait_ready("spinner")["replica_status"][0]
        key = admin.create_key("default", "spin")["key"]
        with busy_server.client(key) as client:
            # Synchronous model code runs off the event loop: probes answer while it works.
            assert client.infer("spinner", {"x": np.array([10, 0], "f4")})["done"][0] == 10
            # Holding the GIL, it cannot answer them; its CPU time grows, so it is left alone.
            assert client.infer("spinner", {"x": np.array([12, 1], "f4")})["done"][0] == 12
            same = admin.get_endpoint("spinner")["replica_status"][0]
            assert (same["pid"], same["restarts"]) == (before["pid"], before["restarts"])

            # Past its grace, a replica that computes without answering is hung all the same.
            with pytest.raises(ModelportClientError):
                client.infer("spinner", {"x": np.array([90, 1], "f4")})
        after = admin.get_endpoint("spinner")["replica_status"][0]
        assert after["restarts"] == before["restarts"] + 1
        assert "busy without answering its health probe for over 20 s" in after["last_error"]
        _serves(busy_server, admin, "breast-cancer")


_PROBER = """
from pathlib import Path

import numpy as np

HOME = Path(__file__).resolve().parents[3]  # <home>/artifacts/sha256/<digest>/model.py


def _can(action):
    try:
        action()
        return 1.0
    except OSError:
        return 0.0


class Prober:
    def predict(self, inputs):
        reach = [
            _can(lambda: (HOME / "admin-token").read_bytes()),
            _can(lambda: list((HOME / "artifacts").iterdir())),
            _can(lambda: (HOME / "modelport.db").read_bytes()),
            _can(lambda: (HOME / "admin-token").write_text("stolen")),
            _can(lambda: Path(__file__).read_bytes()),
        ]
        return {"reach": np.array(reach, "f4")}
"""


def _landlock() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.syscall(444, None, 0, 1) > 0)


def test_model_code_cannot_reach_the_servers_home(
    server: RunningServer, admin: Client, tmp_path: Path
) -> None:
    if not _landlock():
        pytest.skip("this kernel has no Landlock: replicas can read the home (security.md)")
    directory = model_directory(tmp_path, "prober", _PROBER)
    register_python(admin, "prober", directory, "model:Prober", {"x": [1]}, {"reach": [5]})
    admin.create_endpoint("prober", "prober:1")
    admin.wait_ready("prober")
    key = admin.create_key("default", "prober")["key"]
    with server.client(key) as client:
        reach = client.infer("prober", {"x": np.zeros(1, "f4")})["reach"].tolist()
    # token, other artifacts, database, overwriting the token: no; its own artifact: yes.
    assert reach == [0, 0, 0, 0, 1]
    assert (server.home / "modelport.db").exists()
    assert server.admin_token.startswith("mpa_")
