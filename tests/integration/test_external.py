"""External model servers by URL. The external server here is a real HTTP server: a second
Modelport, reached over loopback like any vLLM, llama.cpp server or Triton would be. (A URL
that leads back to the server itself is refused; see test_loops_and_internal_urls.)"""

from __future__ import annotations

import stat
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_breast_cancer

from modelport.client import Client, ModelportClientError
from tests.integration.conftest import RunningServer, demo_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The external server: another Modelport, which may call itself (for the loop test)."""
    env = {
        "MODELPORT_DEMO_MODELS": "breast-cancer,chat-small",
        "MODELPORT_ALLOW_INTERNAL_UPSTREAMS": "true",
    }
    home = tmp_path_factory.mktemp("upstream") / "home"
    with demo_server(home, "breast-cancer", "chat-small", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def upstream_secret(other: RunningServer, admin: Client) -> str:
    # The external server wants a key of its own: here, a key of the server being called.
    with other.client() as upstream_admin:
        key = upstream_admin.create_key("default", "as-upstream")["key"]
    admin.put_secret("upstream-key", key)
    return "upstream-key"


def test_openai_upstream(
    server: RunningServer, other: RunningServer, admin: Client, api_key: str, upstream_secret: str
) -> None:
    admin.create_model("proxy-chat", "chat")
    version = admin.create_version(
        "proxy-chat",
        "openai-upstream",
        runtime_options={
            "url": f"{other.url}/v1",
            "model": "chat-small",
            "credential": upstream_secret,
        },
    )
    assert version["artifact_digest"] == ""
    endpoint = admin.create_endpoint("proxy-chat", "proxy-chat:1")
    assert endpoint["status"] == "ready" and endpoint["replica_status"] == []

    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)
    raw = ai.chat.completions.with_raw_response.create(
        model="proxy-chat",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40,
        temperature=0,
    )
    assert "Paris" in raw.parse().choices[0].message.content
    assert raw.headers["x-modelport-revision"] == "r1"
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in ai.chat.completions.create(
            model="proxy-chat",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
        )
        if chunk.choices
    ]
    assert "".join(pieces).strip()
    ai.close()


def test_v2_upstream(
    server: RunningServer, other: RunningServer, admin: Client, api_key: str, upstream_secret: str
) -> None:
    admin.create_model("proxy-bc", "tabular")
    admin.create_version(
        "proxy-bc",
        "v2-upstream",
        runtime_options={
            "url": other.url,
            "model": "breast-cancer",
            "credential": upstream_secret,
        },
    )
    admin.create_endpoint("proxy-bc", "proxy-bc:1")
    data = load_breast_cancer()
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton.InferInput("input", [20, 30], "FP32")
    tensor.set_data_from_numpy(data.data[:20].astype(np.float32))
    result = client.infer("proxy-bc", [tensor], headers={"Authorization": f"Bearer {api_key}"})
    assert (result.as_numpy("label") == data.target[:20]).mean() >= 0.9
    client.close()


def test_secrets_are_write_only_and_private(server: RunningServer, admin: Client) -> None:
    admin.put_secret("write-only", "s3cret-value")
    listed = admin.list_secrets()
    assert {"name": "write-only"} in listed
    assert "s3cret-value" not in str(listed)
    path = server.home / "secrets" / "write-only"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    admin.delete_secret("write-only")
    assert {"name": "write-only"} not in admin.list_secrets()


def test_bad_external_endpoints_change_nothing(admin: Client) -> None:
    admin.create_model("proxy-bad", "chat")
    with pytest.raises(ModelportClientError) as no_url:
        admin.create_version("proxy-bad", "openai-upstream", runtime_options={"model": "x"})
    assert no_url.value.status == 400 and "url=" in no_url.value.message
    with pytest.raises(ModelportClientError) as artifact:
        admin.create_version(
            "proxy-bad",
            "openai-upstream",
            artifact_digest="sha256:" + "0" * 64,
            runtime_options={"url": "http://127.0.0.1:1/v1"},
        )
    assert artifact.value.status == 422
    admin.create_version(
        "proxy-bad",
        "openai-upstream",
        runtime_options={"url": "http://127.0.0.1:1/v1", "credential": "missing-secret"},
    )
    with pytest.raises(ModelportClientError) as missing:
        admin.create_endpoint("proxy-bad", "proxy-bad:1")
    assert missing.value.status == 404 and "secret 'missing-secret'" in missing.value.message
    assert "proxy-bad" not in [e["name"] for e in admin.list_endpoints()]  # rolled back


def test_loops_and_internal_urls(
    server: RunningServer, admin: Client, other: RunningServer
) -> None:
    # The session's server refuses URLs that lead back to itself or to a metadata service.
    admin.create_model("proxy-self", "tabular")
    for url in (server.url, "http://169.254.169.254/latest"):
        with pytest.raises(ModelportClientError) as refused:
            admin.create_version("proxy-self", "v2-upstream", runtime_options={"url": url})
        assert refused.value.status == 400 and "ALLOW_INTERNAL_UPSTREAMS" in refused.value.message
    # A server that allows them still never loops: the call comes back once and is refused.
    with other.client() as upstream_admin:
        key = upstream_admin.create_key("default", "loop")["key"]
        upstream_admin.put_secret("self-key", key)
        upstream_admin.create_model("loop", "tabular")
        upstream_admin.create_version(
            "loop",
            "v2-upstream",
            runtime_options={"url": other.url, "model": "loop", "credential": "self-key"},
        )
        upstream_admin.create_endpoint("loop", "loop:1")
    with httpx.Client(base_url=other.url, headers={"authorization": f"Bearer {key}"}) as http:
        reply = http.post("/v2/models/loop/infer", json={"inputs": []}, timeout=30)
        # The inner call is refused with 508, which the outer call relays.
        assert reply.status_code == 508 and "called itself" in reply.text
        assert http.get("/healthz").status_code == 200
