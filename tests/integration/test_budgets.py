"""Budgets end to end on a real server: 50 concurrent calls against a cap that admits 10,
refusals naming the budget, the stored cost within the cap, spent surviving a restart, and
the 80% / 100% notices sent once each to a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app
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
INTENT = """\
endpoint: bc-budget
task: tabular
model: breast-cancer@champion
budget:
  monthly_usd: 0.002
"""
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

        # Raised through the CLI: room again; deleted: no cap at all.
        server = ["--url", running.url, "--token", running.admin_token]
        runner = CliRunner()
        raised = runner.invoke(
            app, ["budgets", "set", "--project", "default", "--daily", "0.02", *server]
        )
        assert raised.exit_code == 0, raised.output
        assert _call(running.url, key) == 200
        listed = runner.invoke(app, ["budgets", "list", "--json", *server])
        (budget,) = json.loads(listed.output)
        assert budget["daily"]["spent_usd"] == "0.011000000" and budget["monthly"] is None
        bad = runner.invoke(
            app, ["budgets", "set", "--project", "default", "--daily", "-1", *server]
        )
        assert bad.exit_code == 1 and "daily_usd must not be negative" in bad.output
        deleted = runner.invoke(app, ["budgets", "delete", "--project", "default", *server])
        assert deleted.exit_code == 0, deleted.output
        assert api.get("/budgets").json() == []
        assert _call(running.url, key) == 200

        # An intent's budget.monthly_usd caps its endpoint's month.
        with running.client() as admin:
            assert admin.apply(INTENT)["action"] == "created"
            admin.wait_ready("bc-budget", timeout=120)
            admin.set_prices({"per_1k_requests": "1"}, endpoint="bc-budget")

        def capped() -> bool:
            found = api.get("/budgets", params={"kind": "endpoint"}).json()
            return [(b["name"], b["source"]) for b in found] == [("bc-budget", "intent")]

        wait_for(capped, timeout=15, message="the intent's budget")
        codes = [_call(running.url, key, "bc-budget") for _ in range(4)]
        assert codes == [200, 200, 429, 429], codes


def _call(url: str, key: str, endpoint: str = ENDPOINT) -> int:
    return httpx.post(
        f"{url}/v2/models/{endpoint}/infer",
        json=ROW,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ).status_code


def test_two_gateways_sharing_redis_never_multiply_a_cap(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as shared:
        shared.flushdb()
    env = {**ENV, "MODELPORT_REDIS_URL": redis_url, "MODELPORT_REDIS_TIMEOUT_S": "5"}
    base = tmp_path_factory.mktemp("budgets-redis")
    with (
        demo_server(base / "a", ENDPOINT, env=env) as first,
        demo_server(base / "b", ENDPOINT, env=env) as second,
    ):
        keys = []
        for running in (first, second):
            with running.client() as admin, _api(running) as api:
                admin.set_prices({"per_1k_requests": "1"}, endpoint=ENDPOINT)
                keys.append(admin.create_key("default", "shared")["key"])
                assert api.put("/budgets/project/default", json={"daily_usd": CAP}).is_success

        async def both() -> list[httpx.Response]:
            halves = await asyncio.gather(
                _burst(first.url, keys[0], 25), _burst(second.url, keys[1], 25)
            )
            return [*halves[0], *halves[1]]

        statuses = [r.status_code for r in asyncio.run(both())]
        assert statuses.count(200) == 10 and statuses.count(429) == 40, sorted(statuses)
        for running in (first, second):  # one ledger: both see the whole spend
            with _api(running) as api:
                line = _line(api)
                assert line["spent_usd"] == "0.010000000", line
                assert line["reserved_usd"] == "0.000000000", line
