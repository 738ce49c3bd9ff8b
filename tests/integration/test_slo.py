"""SLOs end to end: real requests burn an error budget and page a real webhook, once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    demo_server,
    start_server,
    stop_server,
    wait_for,
)
from tests.unit.test_alerts import Receiver, serve_receiver

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123"
# A p95 target no request can meet: every request is slow, so the latency budget burns at
# 1 / 5% = 20x, over every page threshold.
INTENT = """\
endpoint: bc-slo
task: tabular
model: breast-cancer@champion
slo:
  p95_latency_ms: 0.001
  availability: 99.5
  window: 7d
"""
PAGE = "slo:bc-slo:latency:burn:page"
ENV = {
    **BREAST_CANCER_ONLY,
    "MODELPORT_SLO_EVAL_INTERVAL_S": "0.3",
    "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver([500])  # the first notice is answered 500, then accepted


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("slo") / "home"
    with demo_server(home, "breast-cancer", env=ENV) as server:
        yield server


@pytest.fixture(scope="module")
def admin(running: RunningServer) -> Iterator[Client]:
    with running.client() as client:
        yield client


def _api(running: RunningServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{running.url}/api/v1",
        headers={"authorization": f"Bearer {running.admin_token}"},
    )


def test_bad_input_is_4xx_naming_the_field_and_stores_nothing(
    running: RunningServer, admin: Client
) -> None:
    with _api(running) as api:
        for body, status, field in [
            ({"url": "ftp://hooks.example.com/x"}, 400, "url"),
            ({"url": "http://169.254.169.254/latest/meta-data"}, 400, "url"),
            ({"url": f"{running.url}/api/v1/keys"}, 400, "url"),  # the server itself
            ({"url": "https://hooks.example.com/x", "secret": "short"}, 422, "secret"),
            ({"url": "https://hooks.example.com/x", "colour": "red"}, 422, "colour"),
        ]:
            response = api.post("/alerts/webhooks", json=body)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            named = error["details"].get("field") or error["details"]["errors"][0]["field"]
            assert named == field, error
        assert api.get("/alerts/webhooks").json() == []

        missing = api.get("/endpoints/no-such-endpoint/slo")
        assert missing.status_code == 404
        assert "endpoint 'no-such-endpoint' does not exist" in missing.json()["error"]["message"]
        assert api.delete("/alerts/webhooks/wh_nope").status_code == 404
        state = api.get("/alerts", params={"state": "sometimes"})
        assert state.status_code == 422 and "state" in state.json()["error"]["message"]

        bad_window = INTENT.replace("window: 7d", "window: 5m")
        refused = api.post("/apply", json={"intent": bad_window})
        assert refused.status_code == 422
        assert "slo.window (line 7): must be a duration from 1h" in refused.text
    assert [e["name"] for e in admin.list_endpoints()] == ["breast-cancer"]

    # An endpoint without an SLO says so, with a 200 and no objectives.
    plain = admin.get_slo("breast-cancer")
    assert plain["objectives"] == [] and plain["budget_remaining"] is None
    assert "has no SLO" in plain["message"]


def test_cli_manages_webhooks(running: RunningServer) -> None:
    server = ["--url", running.url, "--token", running.admin_token]
    runner = CliRunner()
    added = runner.invoke(
        app, ["alerts", "webhooks", "add", "https://hooks.example.com/x", *server]
    )
    assert added.exit_code == 0, added.output
    assert "secret (shown only now): mpw_" in added.output
    listed = runner.invoke(app, ["alerts", "webhooks", "list", "--json", *server])
    (webhook,) = [w for w in json.loads(listed.output) if w["url"].startswith("https://hooks")]
    assert "secret" not in webhook and "mpw_" not in listed.output
    bad = runner.invoke(app, ["alerts", "webhooks", "add", "gopher://x", *server])
    assert bad.exit_code == 1 and "url must be an http:// or https:// URL" in bad.output
    deleted = runner.invoke(app, ["alerts", "webhooks", "delete", webhook["id"], *server])
    assert deleted.exit_code == 0, deleted.output
    episodes = runner.invoke(app, ["alerts", "list", "--state", "open", "--json", *server])
    assert episodes.exit_code == 0 and isinstance(json.loads(episodes.output), list)


def test_slow_requests_burn_the_budget_and_page_once(
    running: RunningServer, admin: Client, receiver: Receiver
) -> None:
    webhook = admin.create_webhook(receiver.url, secret=SECRET, description="on-call")
    assert "secret" not in admin.list_webhooks()[0]
    assert admin.apply(INTENT)["action"] == "created"
    admin.wait_ready("bc-slo", timeout=120)
    with running.client(admin.create_key("default", "slo-test")["key"]) as data:
        rows = np.full((1, 30), 0.5)
        sent = 0

        def burnt() -> bool:
            nonlocal sent
            for _ in range(5):
                data.infer("bc-slo", {"input": rows})
                sent += 1
            return admin.get_slo("bc-slo")["budget_remaining"] < 0

        wait_for(burnt, timeout=60, message="the latency budget to be overspent")
        wait_for(
            lambda: any(n["key"] == PAGE for n in receiver.verified(SECRET)),
            timeout=30,
            message="the fast-burn page to reach the webhook",
        )
        # Keep burning for a few evaluations: the episode stays open and is not sent again.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            data.infer("bc-slo", {"input": rows})
            time.sleep(0.05)

    report = admin.get_slo("bc-slo")
    latency = next(o for o in report["objectives"] if o["objective"] == "latency")
    availability = next(o for o in report["objectives"] if o["objective"] == "availability")
    assert latency["valid_events"] >= sent
    assert latency["bad_events"] == latency["valid_events"]  # every request was slow
    assert latency["budget_remaining"] == pytest.approx(-19.0)  # 20x the 5 % allowed
    assert latency["burn_rates"]["5m"] == pytest.approx(20.0)
    assert {a["windows"] for a in latency["alerts"] if a["firing"]} == {
        "1h/5m",
        "6h/30m",
        "3d/6h",
    }
    assert availability["budget_remaining"] == 1.0  # nothing failed
    assert report["window"] == "7d"
    assert PAGE in {a["key"] for a in report["alerts"]}

    notices = receiver.verified(SECRET)
    assert receiver.requests[0]["status"] == 500  # the first attempt failed and was retried
    counts = Counter((n["key"], n["event"]) for n in notices)
    assert counts[(PAGE, "alert.opened")] == 1, notices
    assert all(count == 1 for count in counts.values()), counts  # one notice per episode
    page = next(n for n in notices if n["key"] == PAGE)
    assert page["kind"] == "slo_burn" and page["endpoint"] == "bc-slo"
    assert page["data"]["severity"] == "page" and page["data"]["objective"] == "latency"
    assert "bc-slo" in page["summary"] and "burning 20.0x" in page["summary"]
    assert (("slo:bc-slo:latency:budget:0", "alert.opened")) in counts

    open_alerts = {a["key"]: a for a in admin.list_alerts(state="open", endpoint="bc-slo")}
    assert open_alerts[PAGE]["open_delivery"] == "sent"
    assert not any(k.startswith("slo:bc-slo:availability") for k in open_alerts)

    # The CLI shows the same report.
    result = CliRunner().invoke(
        app, ["slo", "bc-slo", "--json", "--url", running.url, "--token", running.admin_token]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["budget_remaining"] < 0
    table = CliRunner().invoke(
        app, ["slo", "bc-slo", "--url", running.url, "--token", running.admin_token]
    )
    assert table.exit_code == 0 and "p95 latency under 0.001 ms" in table.output
    assert [w["id"] for w in admin.list_webhooks()] == [webhook["id"]]


def test_restart_does_not_resend_open_episodes(
    running: RunningServer, admin: Client, receiver: Receiver
) -> None:
    """The episodes opened above stay open in the database: the server, restarted on the
    same home, neither opens nor sends them again."""
    before = len(receiver.requests)
    open_before = {a["key"] for a in admin.list_alerts(state="open", endpoint="bc-slo")}
    stop_server(running)
    restarted = start_server(running.home, env=ENV)
    try:
        with restarted.client() as client:
            client.wait_ready("bc-slo", timeout=120)
            wait_for(lambda: client.get_slo("bc-slo")["budget_remaining"] < 0, timeout=60)
            time.sleep(1.5)  # several evaluations
            episodes = client.list_alerts(endpoint="bc-slo")
            assert sorted(a["key"] for a in episodes) == sorted(open_before)
            assert all(a["state"] == "open" for a in episodes)
            (webhook,) = client.list_webhooks()
            client.delete_webhook(webhook["id"])
            assert client.list_webhooks() == []
    finally:
        stop_server(restarted)
    assert len(receiver.requests) == before
