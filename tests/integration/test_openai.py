"""LLM, embeddings and speech through the official ``openai`` client, unchanged."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

from modelport.client import Client
from tests.integration.conftest import RunningServer, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ai(server: RunningServer, api_key: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'hello world' spoken by espeak-ng (Debian), as a 22.05 kHz WAV file."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: make test installs it (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("audio") / "hello.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(path), "hello world"], check=True
    )
    return path


def _usage(admin: Client, request_id: str) -> dict:
    def found() -> bool:
        return any(r["request_id"] == request_id for r in admin.get_usage())

    wait_for(found, timeout=10, message=f"usage of {request_id}")
    return next(r for r in admin.get_usage() if r["request_id"] == request_id)


# -- chat and completions --------------------------------------------------------------------


def test_chat_answers_the_capital_of_france(ai: openai.OpenAI, admin: Client) -> None:
    raw = ai.chat.completions.with_raw_response.create(
        model="chat-small",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40,
        temperature=0,
        extra_headers={"x-request-id": "chat-paris"},
    )
    response = raw.parse()
    assert "Paris" in response.choices[0].message.content
    assert raw.headers["x-request-id"] == "chat-paris"
    assert raw.headers["x-modelport-revision"] == "r1"
    usage = response.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 40
    record = _usage(admin, "chat-paris")
    assert record["units"]["input_tokens"] == usage.prompt_tokens
    assert record["units"]["output_tokens"] == usage.completion_tokens
    assert record["endpoint"] == "chat-small" and record["status"] == 200


def test_chat_stream_with_usage(ai: openai.OpenAI, admin: Client) -> None:
    stream = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": "chat-stream"},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces).strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
    record = _usage(admin, "chat-stream")
    assert record["streamed"] is True
    assert record["units"]["output_tokens"] == usage.completion_tokens
    assert record["units"]["input_tokens"] == usage.prompt_tokens


def test_completion(ai: openai.OpenAI) -> None:
    response = ai.completions.create(
        model="chat-small", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert response.choices[0].text.strip()
    assert response.usage.completion_tokens <= 8
    assert response.choices[0].finish_reason in ("stop", "length")


def test_abandoned_stream_is_metered_and_leaves_the_replica_healthy(
    server: RunningServer, api_key: str, admin: Client, ai: openai.OpenAI
) -> None:
    body = {
        "model": "chat-small",
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {api_key}", "x-request-id": "abandoned"}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers) as r:
        events = 0
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events += 1
            if events == 5:
                break  # hang up mid-stream
    record = _usage(admin, "abandoned")
    assert record["status"] == 499
    assert 5 <= record["units"]["output_tokens"] < 400
    # The replica stopped generating for the gone client and answers the next one.
    again = ai.chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert again.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"messages": []}, "messages", "non-empty list"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000},
            "max_tokens",
            "exceed the context",
        ),
        ({"messages": [{"role": "user", "content": "word " * 3000}]}, "messages", "context holds"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
            "temperature",
            "must be a number",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "must be one of"),
    ],
)
def test_bad_chat_requests(ai: openai.OpenAI, kwargs: dict, param: str, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ai.chat.completions.create(model="chat-small", **kwargs)
    error = info.value.body
    assert error["param"] == param
    assert fragment in error["message"]


def test_unknown_model_and_wrong_task(ai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        ai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "endpoint 'nope' does not exist" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as wrong:
        ai.embeddings.create(model="chat-small", input="hi")
    assert "serves task chat" in wrong.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=str(ai.base_url), api_key="mp_bad", max_retries=0).models.list()


def test_models_lists_the_endpoints(ai: openai.OpenAI) -> None:
    names = {model.id for model in ai.models.list()}
    assert {"chat-small", "embed-small", "asr-small", "digits", "breast-cancer"} <= names


# -- embeddings ------------------------------------------------------------------------------


def test_embeddings(ai: openai.OpenAI, admin: Client) -> None:
    raw = ai.embeddings.with_raw_response.create(
        model="embed-small",
        input=["a cat sat on the mat", "a kitten rested on the rug", "stock markets fell"],
        extra_headers={"x-request-id": "embed-1"},
    )
    response = raw.parse()
    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (3, 384)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2  # a real model, not a stub
    assert response.usage.prompt_tokens == _usage(admin, "embed-1")["units"]["input_tokens"] > 10
    # base64 (the openai client's default) decodes to the same vectors
    encoded = ai.embeddings.create(model="embed-small", input="a cat sat on the mat")
    np.testing.assert_allclose(encoded.data[0].embedding, vectors[0], atol=1e-6)  # batch padding


def test_bad_embedding_input(ai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ai.embeddings.create(model="embed-small", input=[])
    assert info.value.body["param"] == "input"


# -- speech ----------------------------------------------------------------------------------


def test_transcription_wav_and_flac(
    ai: openai.OpenAI, admin: Client, speech: Path, tmp_path: Path
) -> None:
    with speech.open("rb") as audio:
        raw = ai.audio.transcriptions.with_raw_response.create(
            model="asr-small", file=audio, extra_headers={"x-request-id": "asr-wav"}
        )
    text = raw.parse().text.lower()
    assert "hello" in text or "world" in text
    samples, rate = soundfile.read(speech)
    record = _usage(admin, "asr-wav")
    assert record["units"]["audio_seconds"] == pytest.approx(len(samples) / rate, abs=0.01)

    flac = tmp_path / "hello.flac"  # another container and sample rate, resampled by the runtime
    soundfile.write(flac, samples[::2], rate // 2, format="FLAC")
    with flac.open("rb") as audio:
        verbose = ai.audio.transcriptions.create(
            model="asr-small", file=audio, response_format="verbose_json"
        )
    assert verbose.duration == pytest.approx(len(samples[::2]) / (rate // 2), abs=0.01)
    with speech.open("rb") as audio:
        plain = ai.audio.transcriptions.create(
            model="asr-small", file=audio, response_format="text"
        )
    assert isinstance(plain, str) and plain.strip().lower() == text.strip()


def test_not_audio_is_400(ai: openai.OpenAI, tmp_path: Path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio")
    with fake.open("rb") as audio, pytest.raises(openai.BadRequestError) as info:
        ai.audio.transcriptions.create(model="asr-small", file=audio)
    assert "not a WAV or FLAC" in info.value.body["message"]
    assert info.value.body["param"] == "file"


def test_wrong_content_types(server: RunningServer, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    as_json = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        json={"model": "asr-small", "file": "hello.wav"},
        headers=headers,
    )
    assert as_json.status_code == 400
    assert "multipart/form-data" in as_json.json()["error"]["message"]
    as_form = httpx.post(
        f"{server.url}/v1/chat/completions", data={"model": "chat-small"}, headers=headers
    )
    assert as_form.status_code == 400
    assert "not valid JSON" in as_form.json()["error"]["message"]
