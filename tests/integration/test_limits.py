"""Throttling on a real server: RPM bursts, TPM over streamed tokens, concurrency, limits
from an intent, two gateways sharing Redis, and bad limits refused with nothing stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError

from .conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    model_directory,
    register_python,
)

pytestmark = pytest.mark.integration

ROW = [0.5] * 30
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ROW}]}
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"MODELPORT_DEMO_MODELS": "breast-cancer,chat-small"}
    home = tmp_path_factory.mktemp("limits") / "home"
    with demo_server(home, "breast-cancer", "chat-small", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(limited: RunningServer) -> Iterator[Client]:
    with limited.client() as client:
        yield client


def new_key(admin: Client, name: str) -> tuple[str, str]:
    created = admin.create_key("default", name)
    return created["id"], created["key"]


async def burst(url: str, key: str, count: int, path: str, body: dict[str, Any]) -> list[Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, json=body) for _ in range(count)))


async def _hang_up(url: str, key: str, path: str, body: dict[str, Any], after_s: float) -> None:
    """Send a call on a raw connection and close it after ``after_s``, before the answer: a
    client that hangs up. The connection is closed here, not left for the collector (an
    HTTP client's timed-out connection would be, and warn later in another test)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    _, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode() + payload)
        await writer.drain()
        await asyncio.sleep(after_s)
    finally:
        writer.close()
        await writer.wait_closed()


def test_a_burst_over_rpm_gets_exactly_the_excess_refused(
    limited: RunningServer, admin: Client
) -> None:
    key_id, key = new_key(admin, "burst")
    limit = admin.set_limit("key", key_id, rpm=5)
    assert limit == {**limit, "kind": "key", "name": key_id, "rpm": 5, "source": "api"}
    answers = asyncio.run(burst(limited.url, key, 8, "/v2/models/breast-cancer/infer", V2_BODY))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 3
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "5"
        for name in RATE_HEADERS:
            assert name in answer.headers
    refused = next(r for r in answers if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert f"5 requests per minute for key '{key_id}'" in refused.json()["error"]
    remaining = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in answers if r.status_code == 200
    )
    assert remaining == [0, 1, 2, 3, 4]
    # The OpenAI shape on /v1, with its error type.
    openai = httpx.post(
        f"{limited.url}/v1/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert openai.status_code == 429
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert openai.json()["error"]["code"] == "rate_limited"


def test_a_key_without_limits_gets_no_rate_headers(limited: RunningServer, admin: Client) -> None:
    _, key = new_key(admin, "free")
    answer = httpx.post(
        f"{limited.url}/v2/models/breast-cancer/infer",
        json=V2_BODY,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith("x-ratelimit")]


def _chat(max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    # A completion that counts on: a small chat model answering a question may stop early.
    body: dict[str, Any] = {
        "model": "chat-small",
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8,",
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _used(usage: dict[str, int]) -> int:
    return usage["prompt_tokens"] + usage["completion_tokens"]


def test_tpm_counts_streamed_tokens_as_they_are_delivered(
    limited: RunningServer, admin: Client
) -> None:
    key_id, key = new_key(admin, "tokens")
    tpm = 400
    admin.set_limit("key", key_id, tpm=tpm)
    auth = {"Authorization": f"Bearer {key}"}
    url = f"{limited.url}/v1/completions"
    content_events = 0
    peeked: list[int] = []
    usage: dict[str, int] = {}
    with httpx.stream("POST", url, json=_chat(48, stream=True), headers=auth, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-tokens"] == str(tpm)
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            if event["choices"] and event["choices"][0].get("text"):
                content_events += 1
                if content_events == 12:
                    # Mid-stream, another call sees the 12 tokens already delivered.
                    peek = httpx.post(url, json=_chat(1), headers=auth, timeout=60)
                    assert peek.status_code == 200
                    peeked.append(int(peek.headers["x-ratelimit-remaining-tokens"]))
                    peeked.append(_used(peek.json()["usage"]))
    assert content_events > 12 and usage
    before_peek = peeked[0]
    # Input tokens are counted when the call is metered: mid-stream only output is counted.
    assert tpm - content_events <= before_peek <= tpm - 12
    after = httpx.post(url, json=_chat(1), headers=auth, timeout=60)
    assert after.status_code == 200
    # Once both are metered: every input and output token of the two calls before.
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == tpm - _used(usage) - peeked[1]


def test_tpm_used_up_refuses_until_the_window_resets(limited: RunningServer, admin: Client) -> None:
    key_id, key = new_key(admin, "tokens-out")
    admin.set_limit("key", key_id, tpm=30)
    auth = {"Authorization": f"Bearer {key}"}
    url = f"{limited.url}/v1/completions"
    with httpx.stream("POST", url, json=_chat(40, stream=True), headers=auth, timeout=60) as r:
        assert r.status_code == 200
        assert "data: [DONE]" in r.read().decode()  # a call in progress is never cut off
    refused = httpx.post(url, json=_chat(1), headers=auth, timeout=60)
    assert refused.status_code == 429
    assert "30 tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == "30"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-reset-tokens"].endswith("s")


SLOW_MODEL = """
import asyncio


class Slow:
    def load(self):
        pass

    async def predict(self, inputs):
        await asyncio.sleep(1.5)
        return {"y": inputs["x"] * 2}
"""
SLOW_BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}


def test_concurrency_limit(limited: RunningServer, admin: Client, tmp_path: Path) -> None:
    directory = model_directory(tmp_path, "slow", SLOW_MODEL)
    register_python(admin, "slow", directory, "model:Slow", {"x": [-1]}, {"y": [-1]})
    admin.create_endpoint("slow", "slow:1")
    admin.wait_ready("slow", timeout=120)
    key_id, key = new_key(admin, "concurrent")
    admin.set_limit("key", key_id, concurrency=2)
    path = "/v2/models/slow/infer"

    async def scenario() -> None:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=limited.url, headers=auth, timeout=30) as client:
            held = [asyncio.create_task(client.post(path, json=SLOW_BODY)) for _ in range(2)]
            await asyncio.sleep(0.7)  # both are in the replica now, sleeping
            third = await client.post(path, json=SLOW_BODY)
            assert third.status_code == 429
            assert third.headers["retry-after"] == "1"
            assert "2 requests at a time for key" in third.json()["error"]
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            # Their slots are back.
            again = await asyncio.gather(*(client.post(path, json=SLOW_BODY) for _ in range(2)))
            assert [r.status_code for r in again] == [200, 200]
            # A client that hangs up (499) gives its slot back too.
            admin.set_limit("key", key_id, concurrency=1)
            await _hang_up(limited.url, key, path, SLOW_BODY, after_s=0.5)
            await asyncio.sleep(0.5)
            assert (await client.post(path, json=SLOW_BODY)).status_code == 200

    asyncio.run(scenario())


def test_limits_from_an_intent(limited: RunningServer, admin: Client) -> None:
    intent = (
        "endpoint: bc-limited\ntask: tabular\nmodel: breast-cancer@champion\nlimits:\n  rpm: 2\n"
    )
    admin.apply(intent)
    admin.wait_ready("bc-limited", timeout=120)
    listed = admin.list_limits("endpoint")
    assert {
        "kind": "endpoint",
        "name": "bc-limited",
        "rpm": 2,
        "tpm": None,
        "concurrency": None,
        "source": "intent",
    }.items() <= next(x for x in listed if x["name"] == "bc-limited").items()
    _, key = new_key(admin, "intent")
    answers = asyncio.run(burst(limited.url, key, 3, "/v2/models/bc-limited/infer", V2_BODY))
    assert sorted(r.status_code for r in answers) == [200, 200, 429]
    refused = next(r for r in answers if r.status_code == 429)
    assert "endpoint 'bc-limited'" in refused.json()["error"]


def test_bad_limits_are_refused_naming_the_field_and_nothing_is_stored(
    limited: RunningServer, admin: Client
) -> None:
    key_id, _ = new_key(admin, "bad")
    before = admin.list_limits()
    auth = {"Authorization": f"Bearer {limited.admin_token}"}

    def put(path: str, body: Any) -> httpx.Response:
        return httpx.put(f"{limited.url}/api/v1/limits/{path}", json=body, headers=auth)

    cases = [
        ("planet/x", {"rpm": 5}, 400, "kind"),
        (f"key/{key_id}", {"rpm": -1}, 422, "rpm"),
        (f"key/{key_id}", {"tpm": 0}, 422, "tpm"),
        (f"key/{key_id}", {"rpm": "5"}, 422, "rpm"),
        (f"key/{key_id}", {"concurrency": 1.5}, 422, "concurrency"),
        (f"key/{key_id}", {"rpm": True}, 422, "rpm"),
        (f"key/{key_id}", {"rpm": 2**40}, 422, "rpm"),
        (f"key/{key_id}", {"rps": 5}, 422, "rps"),
        (f"key/{key_id}", {}, 400, "rpm"),
        ("key/key_nonexistent", {"rpm": 5}, 404, "name"),
        ("project/no-such-project", {"rpm": 5}, 404, "name"),
    ]
    for path, body, status, field in cases:
        answer = put(path, body)
        assert answer.status_code == status, (path, body, answer.text)
        assert field in answer.text, (path, body, answer.text)
    missing = httpx.delete(f"{limited.url}/api/v1/limits/key/{key_id}", headers=auth)
    assert missing.status_code == 404
    assert httpx.get(f"{limited.url}/api/v1/limits?kind=planet", headers=auth).status_code == 400
    assert admin.list_limits() == before
    # Set, list, delete.
    admin.set_limit("customer", "acme corp", rpm=10, concurrency=3)
    assert any(x["name"] == "acme corp" for x in admin.list_limits("customer"))
    removed = admin.delete_limit("customer", "acme corp")
    assert removed["rpm"] == 10
    assert admin.list_limits() == before
    with pytest.raises(ModelportClientError):
        admin.delete_limit("customer", "acme corp")
    # Each change, and only the changes, went to the audit log.
    audited = admin.list_audit(target="customer:acme corp")
    assert sorted(entry["action"] for entry in audited) == ["limits.delete", "limits.set"]
    assert admin.list_audit(action="limits.", target=f"key:{key_id}") == []  # refused: none


def test_the_cli_sets_lists_and_deletes(limited: RunningServer) -> None:
    runner = CliRunner()
    common = ["--url", limited.url, "--token", limited.admin_token]
    result = runner.invoke(app, ["limits", "set", "--team", "default", "--rpm", "1000", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["limits", "list", "--json", *common])
    assert result.exit_code == 0, result.output
    assert {"kind": "team", "name": "default", "rpm": 1000}.items() <= next(
        x for x in json.loads(result.output) if x["kind"] == "team"
    ).items()
    result = runner.invoke(app, ["limits", "set", "--rpm", "5", *common])
    assert result.exit_code == 2 and "exactly one scope" in result.output
    result = runner.invoke(app, ["limits", "set", "--team", "default", "--rpm", "0", *common])
    assert result.exit_code == 2
    result = runner.invoke(app, ["limits", "delete", "--team", "default", *common])
    assert result.exit_code == 0, result.output


def test_two_gateways_sharing_redis_share_the_limit(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    env = {**BREAST_CANCER_ONLY, "MODELPORT_REDIS_URL": redis_url}
    one_home = tmp_path_factory.mktemp("redis-one") / "home"
    two_home = tmp_path_factory.mktemp("redis-two") / "home"
    with (
        demo_server(one_home, "breast-cancer", env=env) as one,
        demo_server(two_home, "breast-cancer", env=env) as two,
    ):
        keys = []
        for server in (one, two):
            with server.client() as admin:
                admin.set_limit("endpoint", "breast-cancer", rpm=6)
                keys.append(new_key(admin, "shared")[1])

        async def both() -> list[Any]:
            path = "/v2/models/breast-cancer/infer"
            first, second = await asyncio.gather(
                burst(one.url, keys[0], 5, path, V2_BODY),
                burst(two.url, keys[1], 5, path, V2_BODY),
            )
            return [*first, *second]

        answers = asyncio.run(both())
        assert sorted(r.status_code for r in answers) == [200] * 6 + [429] * 4
