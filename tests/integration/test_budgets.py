"""Budgets end to end on a real server: 50 concurrent calls against a cap that admits 10,
refusals naming the budget, the stored cost within the cap, spent surviving a restart, and
the 80% / 100% notices sent once each to a real webhook receiver."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    wait_for,
)
from tests.unit.test_alerts import Receiver, serve_receiver

pytestmark = pytest.mark.integration

ENDPOINT = "breast-cancer"
PER_CALL = 1_000_000  # $1 per 1,000 requests: one call costs $0.001 (nano-USD)
CAP = "0.01"  # admits exactly 10 calls a day
SECRET = "budget-webhook-secret-0123"
ENV = {
    **BREAST_CANCER_ONLY,
    "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2",
    "MODELPORT_BUDGET_CHECK_INTERVAL_S": "0.2",
}
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("budgets") / "home"


def _api(running: RunningServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{running.url}/api/v1",
        headers={"authorization": f"Bearer {running.admin_token}"},
        timeout=30,
    )


async def _burst(url: str, key: str, calls: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{url}/v2/models/{ENDPOINT}/infer",
                    json=ROW,
                    headers={"authorization": f"Bearer {key}"},
                )
                for _ in range(calls)
            )
        )


def _stored_cost(home: Path) -> tuple[int, int]:
    with sqlite3.connect(home / "modelport.db") as db:
        count, cost = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_nanousd), 0) FROM usage_events"
        ).fetchone()
    return int(count), int(cost)


def _line(admin: httpx.Client) -> dict:
    (budget,) = [b for b in admin.get("/budgets").json() if b["name"] == "default"]
    return budget["daily"]


def test_budgets_end_to_end(home: Path, receiver: Receiver) -> None:
    with demo_server(home, ENDPOINT, env=ENV) as running, _api(running) as api:
        # Bad input first: each a 4xx naming its field, and nothing stored.
        for path, body, status, field in [
            ("/budgets/planet/x", {"daily_usd": "1"}, 400, "kind"),
            ("/budgets/project/default", {"monthly_usd": -1}, 400, "monthly_usd"),
            ("/budgets/project/default", {"daily_usd": "lots"}, 400, "daily_usd"),
            ("/budgets/project/default", {"daily_usd": True}, 400, "daily_usd"),
            ("/budgets/project/default", {"daily_usd": "0.0000000001"}, 400, "daily_usd"),
            ("/budgets/project/default", {}, 400, "monthly_usd"),
            ("/budgets/project/default", {"weekly_usd": "1"}, 400, "weekly_usd"),
            ("/budgets/project/nowhere", {"daily_usd": "1"}, 404, "name"),
            ("/budgets/endpoint/nowhere", {"daily_usd": "1"}, 404, "name"),
        ]:
            response = api.put(path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert response.json()["error"]["details"]["field"] == field, response.text
        assert api.get("/budgets").json() == []
        assert api.get("/budgets", params={"kind": "planet"}).status_code == 400
        assert api.delete("/budgets/project/default").status_code == 404

        with running.client() as admin:
            admin.create_webhook(receiver.url, secret=SECRET, description="budgets")
            admin.set_prices({"per_1k_requests": "1"}, endpoint=ENDPOINT)
            key = admin.create_key("default", "budget-test")["key"]
        set_ = api.put("/budgets/project/default", json={"daily_usd": CAP, "monthly_usd": 5})
        assert set_.status_code == 200, set_.text
        assert set_.json()["daily"]["cap_usd"] == "0.010000000"

        # 50 at once against a cap that admits 10: exactly 10 through, the rest refused.
        answers = asyncio.run(_burst(running.url, key, 50))
        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(200) == 10 and statuses.count(429) == 40, statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert "daily budget of project 'default'" in refused.json()["error"]
        assert 0 < int(refused.headers["retry-after"]) <= 86400
        # Every reservation settled: nothing held, spent exactly the cap.
        line = _line(api)
        assert line["spent_usd"] == "0.010000000" and line["reserved_usd"] == "0.000000000"
        assert line["remaining_usd"] == "0.000000000"

        # OpenAI-shaped refusal with its code, for a later call.
        later = httpx.post(
            f"{running.url}/v2/models/{ENDPOINT}/infer",
            json=ROW,
            headers={"authorization": f"Bearer {key}"},
        )
        assert later.status_code == 429

        # What the loader stores never exceeds the cap: ten calls, $0.01.
        wait_for(lambda: _stored_cost(home)[0] >= 10, timeout=30, message="events stored")
        assert _stored_cost(home) == (10, 10 * PER_CALL)

        # 80% and 100% of the daily cap crossed: one notice each, signed.
        def notices() -> list[dict]:
            return [n for n in receiver.verified(SECRET) if n["kind"] == "budget"]

        wait_for(lambda: len(notices()) >= 2, timeout=30, message="budget notices")
        time.sleep(1.0)  # a few more checks: nothing is sent again
        sent = notices()
        assert sorted(n["data"]["threshold_percent"] for n in sent) == [80, 100], sent
        assert all(n["event"] == "alert.opened" for n in sent)
        assert all(n["data"]["scope"] == "project" and n["data"]["name"] == "default" for n in sent)

    # Restarted: what was spent today is still spent (seeded from the stored usage).
    with demo_server(home, ENDPOINT, env=ENV) as running, _api(running) as api:
        line = _line(api)
        assert line["spent_usd"] == "0.010000000", line
        again = httpx.post(
            f"{running.url}/v2/models/{ENDPOINT}/infer",
            json=ROW,
            headers={"authorization": f"Bearer {key}"},
        )
        assert again.status_code == 429, again.text
        time.sleep(1.0)
        assert len([n for n in receiver.verified(SECRET) if n["kind"] == "budget"]) == 2

        # Raised: room again; deleted: no cap at all.
        assert api.put("/budgets/project/default", json={"daily_usd": "0.02"}).status_code == 200
        assert _call(running.url, key) == 200
        assert api.delete("/budgets/project/default").status_code == 200
        assert api.get("/budgets").json() == []
        assert _call(running.url, key) == 200


def _call(url: str, key: str) -> int:
    return httpx.post(
        f"{url}/v2/models/{ENDPOINT}/infer",
        json=ROW,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ).status_code
