"""Bounded input on a real server: credentials are checked before a body is read, bodies are
counted as they arrive (chunked ones too) and timed, intent files and artifacts cannot expand.

Raw sockets stand in for hostile clients: an HTTP library would send whole, well-formed
requests, which is exactly what these clients do not do.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import demo_server

from .conftest import BREAST_CANCER_ONLY, RunningServer

pytestmark = pytest.mark.integration

BODY_TIMEOUT_S = 2.0
CONTROL_LIMIT = 64 * 1024
ARTIFACT_LIMIT = 1024 * 1024
ROW = [0.5] * 30


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        **BREAST_CANCER_ONLY,
        "MODELPORT_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MODELPORT_MAX_CONTROL_BODY_BYTES": str(CONTROL_LIMIT),
        "MODELPORT_MAX_ARTIFACT_BYTES": str(ARTIFACT_LIMIT),
        "MODELPORT_MAX_ARTIFACT_FILES": "50",
    }
    with demo_server(tmp_path_factory.mktemp("bounded") / "home", "breast-cancer", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin_headers(srv: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.admin_token}"}


@pytest.fixture(scope="module")
def api_key(srv: RunningServer) -> str:
    with srv.client() as admin:
        return str(admin.create_key("default", "bounded")["key"])


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------


class Raw:
    """One connection that sends exactly the bytes it is given."""

    def __init__(self, server: RunningServer) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: test",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> bool:
        """False once the server has closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def chunk(self, data: bytes) -> bool:
        return self.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def answered(self) -> bool:
        """Whether the server has sent something (without waiting)."""
        return bool(self.buffer) or bool(select.select([self.sock], [], [], 0)[0])

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection within ``within`` seconds."""
        self.sock.settimeout(within)
        try:
            while data := self.sock.recv(65536):
                self.buffer += data
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed; got {self.buffer!r}")
        self.buffer += data


def _error_message(body: bytes) -> str:
    error = json.loads(body)["error"]
    return str(error["message"] if isinstance(error, dict) else error)


# -- authenticated before it is read -----------------------------------------------------------

CONTROL_WRITES = [
    ("POST", "/api/v1/models"),
    ("POST", "/api/v1/models/breast-cancer/versions"),
    ("POST", "/api/v1/apply"),
    ("POST", "/api/v1/artifacts?filename=model.onnx"),
    ("PUT", "/api/v1/secrets/upstream"),
    ("POST", "/api/v1/keys"),
]


@pytest.mark.parametrize(("method", "path"), CONTROL_WRITES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic YWRtaW46YWRtaW4="])
def test_unauthenticated_chunked_bodies_are_refused_before_they_are_read(
    srv: RunningServer, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    with Raw(srv) as raw:
        raw.head(method, path, headers)
        raw.chunk(b'{"name": ')  # the body never ends: only a check before reading answers
        status, response_headers, body = raw.response()
        assert status == 401, body
        assert "admin token" in _error_message(body)
        assert response_headers.get("connection") == "close"
        assert raw.closed()


def test_scheme_of_the_admin_token_is_case_insensitive(srv: RunningServer) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = httpx.get(
            f"{srv.url}/api/v1/models", headers={"Authorization": f"{scheme} {srv.admin_token}"}
        )
        assert response.status_code == 200, (scheme, response.text)


# -- counted as they arrive --------------------------------------------------------------------


def test_chunked_control_body_is_refused_at_the_byte_that_passes_the_limit(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    with Raw(srv) as raw:
        raw.head("POST", "/api/v1/models", {**admin_headers, "Transfer-Encoding": "chunked"})
        raw.chunk(b"[" + b" " * (CONTROL_LIMIT - 1))  # exactly the limit: still reading
        time.sleep(0.3)
        assert not raw.answered()
        raw.chunk(b" ")  # one byte more, and the body is still not finished
        status, headers, body = raw.response()
        assert status == 413
        assert f"exceeds the limit of {CONTROL_LIMIT} bytes" in _error_message(body)
        assert "MODELPORT_MAX_CONTROL_BODY_BYTES" in _error_message(body)
        assert headers.get("connection") == "close"
        assert raw.closed()


def test_declared_length_over_the_control_limit_is_refused_unread(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    with Raw(srv) as raw:
        raw.head("POST", "/api/v1/models", {**admin_headers, "Content-Length": str(10**9)})
        status, _, body = raw.response()
        assert status == 413
        assert "MODELPORT_MAX_CONTROL_BODY_BYTES" in _error_message(body)


def test_chunked_artifact_upload_is_refused_at_its_own_limit(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    staging = srv.home / "artifacts" / "staging"
    with Raw(srv) as raw:
        headers = {**admin_headers, "Transfer-Encoding": "chunked"}
        raw.head("POST", "/api/v1/artifacts?filename=model.onnx", headers)
        sent = 0
        while sent <= ARTIFACT_LIMIT and raw.chunk(b"x" * 65536):
            sent += 65536
        status, headers_back, body = raw.response()
        assert status == 413
        assert f"exceeds the limit of {ARTIFACT_LIMIT} bytes" in _error_message(body)
        assert "MODELPORT_MAX_ARTIFACT_BYTES" in _error_message(body)
        assert headers_back.get("connection") == "close"
    assert not list(staging.glob("upload-*"))  # the partial upload was removed


def test_a_control_body_within_the_limit_still_works(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:  # httpx sends a generator chunked
        yield b'{"name": "chunked-model", '
        yield b'"task": "tabular"}'

    response = httpx.post(
        f"{srv.url}/api/v1/models",
        content=chunks(),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "chunked-model"


# -- timed -------------------------------------------------------------------------------------


def _trickle(raw: Raw, total: int, every: float, give_up_after: float) -> float:
    """Send one byte every ``every`` seconds until the server answers; seconds it took."""
    started = time.monotonic()
    for _ in range(total):
        if raw.answered() or not raw.send(b"x"):
            break
        if time.monotonic() - started > give_up_after:
            pytest.fail(f"no answer to a trickled body after {give_up_after} s")
        time.sleep(every)
    return time.monotonic() - started


@pytest.mark.parametrize(
    "path",
    ["/api/v1/models", "/api/v1/artifacts?filename=model.onnx"],
)
def test_a_trickled_control_body_times_out(
    srv: RunningServer, admin_headers: dict[str, str], path: str
) -> None:
    with Raw(srv) as raw:
        raw.head("POST", path, {**admin_headers, "Content-Length": "1000"})
        # Artifact uploads time out on a pause, not on their total: so pause.
        every = 0.25 if "models" in path else BODY_TIMEOUT_S + 1
        took = _trickle(raw, 1000, every, give_up_after=BODY_TIMEOUT_S + 8)
        status, headers, body = raw.response()
        assert status == 408, body
        assert "send it without pauses" in _error_message(body)
        assert headers.get("connection") == "close"
        assert raw.closed()
    assert BODY_TIMEOUT_S - 0.5 <= took <= BODY_TIMEOUT_S + 4


def test_a_trickled_inference_body_times_out(srv: RunningServer, api_key: str) -> None:
    with Raw(srv) as raw:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Length": "100000"}
        raw.head("POST", "/v2/models/breast-cancer/infer", headers)
        took = _trickle(raw, 100000, 0.25, give_up_after=BODY_TIMEOUT_S + 8)
        status, headers, body = raw.response()
        assert status == 408, body
        assert headers.get("connection") == "close"
        assert raw.closed()
    assert BODY_TIMEOUT_S - 0.5 <= took <= BODY_TIMEOUT_S + 4
    ok = httpx.post(
        f"{srv.url}/v2/models/breast-cancer/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ROW}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert ok.status_code == 200, ok.text


# -- intent files ------------------------------------------------------------------------------

LAUGHS = "".join(
    ['endpoint: laughs\ntask: tabular\nmodel: breast-cancer\nruntime_options:\n  a0: &a0 ["lol"]\n']
    + [f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 13)]
)


def _apply(srv: RunningServer, headers: dict[str, str], intent: str) -> httpx.Response:
    return httpx.post(
        f"{srv.url}/api/v1/apply",
        json={"intent": intent, "dry_run": True},
        headers=headers,
        timeout=30,
    )


def test_yaml_aliases_are_refused_naming_the_line(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    assert len(LAUGHS) < 700  # 4**12 = 16 million "lol"s once expanded
    started = time.monotonic()
    response = _apply(srv, admin_headers, LAUGHS)
    assert response.status_code == 422, response.text
    assert "line 5: anchors and aliases" in response.json()["error"]["message"]
    assert time.monotonic() - started < 2


def test_deep_yaml_is_a_4xx_not_a_500(srv: RunningServer, admin_headers: dict[str, str]) -> None:
    deep = (
        "endpoint: deep\ntask: tabular\nmodel: m\nruntime_options: {x: "
        + "[" * 500
        + "]" * 500
        + "}\n"
    )
    response = _apply(srv, admin_headers, deep)
    assert response.status_code == 422, response.text
    assert "nest more than 32 levels" in response.json()["error"]["message"]


def test_parsing_a_large_intent_does_not_stall_health_checks(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    # ~60 KB of YAML, as large as an intent may be, parsed while /healthz is polled.
    items = ", ".join(f"k{i}: [{i}, {i}]" for i in range(3000))
    intent = f"endpoint: big\ntask: tabular\nmodel: breast-cancer\nruntime_options: {{{items}}}\n"
    assert 50_000 < len(intent) < 65_536  # parsing it takes ~0.5 s of CPU
    worst = 0.0
    done = threading.Event()

    def poll() -> None:
        nonlocal worst
        with httpx.Client() as client:
            while not done.is_set():
                started = time.monotonic()
                assert client.get(f"{srv.url}/healthz").status_code == 200
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(3):
            assert _apply(srv, admin_headers, intent).status_code < 500
    finally:
        done.set()
        poller.join()
    assert worst < 0.3


# -- artifacts ---------------------------------------------------------------------------------


def _upload_tar(srv: RunningServer, headers: dict[str, str], data: bytes) -> httpx.Response:
    return httpx.post(
        f"{srv.url}/api/v1/artifacts",
        params={"filename": "bomb", "archive": "true"},
        content=data,
        headers=headers,
        timeout=30,
    )


def test_archive_bomb_is_refused_at_the_limit(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = 400 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert len(buffer.getvalue()) < ARTIFACT_LIMIT  # 400 MB of zeros packs into ~400 KB
    before = set((srv.home / "artifacts" / "sha256").iterdir())
    response = _upload_tar(srv, admin_headers, buffer.getvalue())
    assert response.status_code == 413, response.text
    assert f"more than {ARTIFACT_LIMIT} bytes once unpacked" in response.json()["error"]["message"]
    assert set((srv.home / "artifacts" / "sha256").iterdir()) == before
    assert not any((srv.home / "artifacts" / "staging").iterdir())


def test_archive_with_too_many_files_is_refused(
    srv: RunningServer, admin_headers: dict[str, str]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(51):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    response = _upload_tar(srv, admin_headers, buffer.getvalue())
    assert response.status_code == 413, response.text
    assert "more than 50 files" in response.json()["error"]["message"]


def _register(srv: RunningServer, headers: dict[str, str], path: str) -> httpx.Response:
    return httpx.post(
        f"{srv.url}/api/v1/models/breast-cancer/versions",
        json={"runtime": "onnx", "artifact_path": path},
        headers=headers,
        timeout=30,
    )


@pytest.mark.timeout(60)
def test_special_files_as_artifact_path_are_400(
    srv: RunningServer, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    response = _register(srv, admin_headers, str(fifo))
    assert response.status_code == 400, response.text
    assert "not a regular file or directory" in response.json()["error"]["message"]
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"x")
    os.mkfifo(directory / "pipe")
    response = _register(srv, admin_headers, str(directory))
    assert response.status_code == 400, response.text
    assert "'pipe' is not a regular file" in response.json()["error"]["message"]


@pytest.mark.timeout(60)
def test_artifact_path_outside_the_roots_is_403(
    srv: RunningServer, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "token").symlink_to(srv.home / "admin-token")
    for path in ("/dev/zero", "/etc/hostname", str(tmp_path / "zero"), str(tmp_path / "token")):
        response = _register(srv, admin_headers, path)
        assert response.status_code == 403, (path, response.text)
        message = response.json()["error"]["message"]
        assert "MODELPORT_ARTIFACT_ROOTS" in message
        assert response.json()["error"]["details"] == {"field": "artifact_path"}


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("GET", "/api/v1/models/breast-cancer/versions/99999999999999999999", None, 422, "version"),
        ("DELETE", "/api/v1/models/breast-cancer/versions/4294967296", None, 422, "version"),
        ("PUT", "/api/v1/models/breast-cancer/aliases/x", {"version": 2**63}, 422, "version"),
        (
            "POST",
            "/api/v1/endpoints",
            {"name": "n", "model": "breast-cancer:2147483648"},
            400,
            "1 to 2147483647",
        ),
        (
            "POST",
            "/api/v1/endpoints",
            {"name": "n", "model": "breast-cancer:\u00b2"},
            400,
            "1 to 2147483647",
        ),
    ],
)
def test_version_numbers_past_what_a_database_holds_are_4xx(
    srv: RunningServer,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: object,
    status: int,
    fragment: str,
) -> None:
    # Found by Schemathesis: these were database overflows (500) or int("²") (500).
    response = httpx.request(method, srv.url + path, json=body, headers=admin_headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize("url", ["http://[::1", "http://\ud800/", "http://" + "a" * 300 + "/"])
def test_external_urls_that_do_not_parse_are_400(
    srv: RunningServer, admin_headers: dict[str, str], url: str
) -> None:
    # An unclosed IPv6 bracket or a host IDNA cannot encode raised ValueError: a 500.
    with httpx.Client(base_url=srv.url, headers=admin_headers) as client:
        client.post("/api/v1/models", json={"name": "external", "task": "chat"})
        body = {"runtime": "openai-upstream", "runtime_options": {"url": url}}
        response = client.post(  # json.dumps escapes a lone surrogate, as a client may
            "/api/v1/models/external/versions",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {"field": "runtime_options.url"}


@pytest.mark.parametrize("field", ["metrics", "tags", "runtime_options"])
def test_nan_and_infinity_are_not_stored(
    srv: RunningServer, admin_headers: dict[str, str], field: str
) -> None:
    # Python's JSON parser takes them; PostgreSQL's JSON and clients' parsers do not.
    body = f'{{"runtime": "onnx", "artifact_digest": "sha256:{"0" * 64}", "{field}": {{"a": NaN}}}}'
    response = httpx.post(
        f"{srv.url}/api/v1/models/breast-cancer/versions",
        content=body.encode(),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert f"{field}: Value error, must be plain JSON" in message
