"""Work nobody waits for stops: abandoned chats do not hold up the next caller."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration

# SmolLM2's end-of-text and end-of-turn tokens, banned so that every answer is as long as
# max_tokens allows: 1,500 tokens, several seconds each on these machines.
NEVER_STOP = {"0": -100, "2": -100}


def test_abandoned_chats_stop_generating(server: RunningServer, api_key: str) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    url = f"{server.url}/v1/chat/completions"
    long_answer = {
        "model": "chat-small",
        "messages": [{"role": "user", "content": "Count from 1 to 1000."}],
        "max_tokens": 1500,
        "logit_bias": NEVER_STOP,
    }

    def abandon(_: int) -> str:
        try:
            httpx.post(url, json=long_answer, headers=headers, timeout=1.0)
        except httpx.TimeoutException:
            return "abandoned"
        return "answered"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(abandon, range(4))) == ["abandoned"] * 4
    started = time.monotonic()
    reply = httpx.post(
        url,
        json={
            "model": "chat-small",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        },
        headers=headers,
        timeout=60,
    )
    waited = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    # Had the four run to their end, this call would have queued behind 6,000 tokens (over
    # 12 s here, measured). Stopped, it waits for at most a token of each (0.2 s measured).
    assert waited < 4, f"the next caller waited {waited:.1f} s"
    with httpx.Client(base_url=server.url) as http:
        admin = {"authorization": f"Bearer {server.admin_token}"}
        recent = http.get("/api/v1/usage/recent", params={"limit": 10}, headers=admin).json()
    statuses = [r["status"] for r in recent if r["endpoint"] == "chat-small"][:5]
    assert statuses == [200, 499, 499, 499, 499]  # the gateway metered each client leaving
