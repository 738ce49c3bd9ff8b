"""Cost end to end: prices set through the API price real requests of the breast-cancer demo,
per customer and team, to the nano-USD, equal to the raw events; replica time is priced,
allocated by busy time, and an hour without traffic shows as idle cost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    open_to,
    start_server,
    stop_server,
    team_key,
)

pytestmark = pytest.mark.integration

ENDPOINT = "breast-cancer"
PER_1K_ROWS = 2_000_000  # $0.002 per 1,000 rows, in nano-USD
# (customer, team, rows per request, requests)
TRAFFIC = [("acme", "red", 3, 7), ("globex", "blue", 5, 4)]


@pytest.fixture(scope="module")
def cost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("costs") / "home"
    env = {**BREAST_CANCER_ONLY, "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2"}
    server = start_server(home, "--demo", env=env)
    try:
        with server.client() as client:
            client.wait_ready(ENDPOINT, timeout=120)
        yield server
    finally:
        stop_server(server)


def _infer(url: str, key: str, customer: str, rows: int) -> None:
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, 30], "data": [0.5] * 30 * rows}
        ]
    }
    response = httpx.post(
        f"{url}/v2/models/{ENDPOINT}/infer",
        json=body,
        headers={"authorization": f"Bearer {key}", "x-modelport-customer": customer},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def _wait_for(client: Client, requests: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = client.get_costs(by="customer", since="2h")
        if report["totals"]["requests"] >= requests or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_costs_per_customer_reconcile_with_events_and_uptime(cost_server: RunningServer) -> None:
    url = cost_server.url
    with cost_server.client() as client:
        # Bad prices first: each refused naming its field, and none stored.
        for body, status, param in [
            (
                {"model": f"{ENDPOINT}:1", "prices": {"per_1k_rows": "-0.002"}},
                400,
                "prices.per_1k_rows",
            ),
            (
                {"model": f"{ENDPOINT}:1", "prices": {"per_1k_furlongs": "1"}},
                400,
                "prices.per_1k_furlongs",
            ),
            ({"model": f"{ENDPOINT}:99", "prices": {"per_1k_rows": "1"}}, 404, "model"),
            ({"endpoint": "nowhere", "prices": {"per_1k_rows": "1"}}, 404, "endpoint"),
            (
                {
                    "hardware": "cpu",
                    "prices": {"per_hour": "1"},
                    "effective_from": "2020-01-01T00:00:00Z",
                },
                400,
                "effective_from",
            ),
        ]:
            with pytest.raises(ModelportClientError) as caught:
                client.set_prices(**body)  # type: ignore[arg-type]
            assert (caught.value.status, caught.value.details.get("param")) == (status, param)
        with pytest.raises(ModelportClientError) as caught:
            client._call(
                "POST", "/api/v1/prices", json={"hardware": "cpu", "prices": {"per_hour": 0.5}}
            )
        assert caught.value.status == 422 and "prices.per_hour" in caught.value.message
        assert client.list_prices() == []

        client.set_prices({"per_1k_rows": "0.002"}, model=f"{ENDPOINT}@1")
        client.set_prices({"per_hour": "0.36"}, hardware="cpu")
        listed = client.list_prices()
        assert {(p["target"], p["unit"], p["usd"], p["in_force"]) for p in listed} == {
            (f"{ENDPOINT}:1", "per_1k_rows", "0.002000000", True),
            ("cpu", "per_hour", "0.360000000", True),
        }
        # Each team's key is of a project of that team, which the endpoint is opened to.
        keys = {
            team: team_key(cost_server, client, team, f"key-{team}", customers=[customer])["key"]
            for customer, team, _, _ in TRAFFIC
        }
        open_to(client, ENDPOINT, f"{ENDPOINT}:1", [f"team:{team}" for _, team, _, _ in TRAFFIC])

    for customer, team, rows, count in TRAFFIC:
        for _ in range(count):
            _infer(url, keys[team], customer, rows)

    with cost_server.client() as client:
        total_requests = sum(count for *_, count in TRAFFIC)
        report = _wait_for(client, total_requests)
        by_customer = {row["customer"]: row for row in report["rows"]}
        events = client.usage_events(since="2h", limit=1000)
        for customer, team, rows, count in TRAFFIC:
            row = by_customer[customer]
            expected = count * rows * PER_1K_ROWS // 1000  # exact: whole nano-USD per request
            assert row["requests"] == count
            assert row["unit"]["nanousd"] == expected
            # ... and equal, to the nano-USD, to the sum over the raw events.
            assert sum(e["cost_nanousd"] for e in events if e["customer"] == customer) == expected
            # The team's view of its spend on this endpoint for this customer.
            mine = client.get_costs(
                by="revision", since="2h", team=team, endpoint=ENDPOINT, customer=customer
            )
            assert [(r["endpoint"], r["unit"]["nanousd"]) for r in mine["rows"]] == [
                (ENDPOINT, expected)
            ]
            assert mine["idle"]["nanousd"] == 0

        # Compute: the replica's time this window, priced, all allocated to the two customers
        # (both used it in this hour) or idle; never more, never less.
        compute = report["compute"]
        assert [c["endpoint"] for c in compute] == [ENDPOINT]
        assert compute[0]["nanousd"] > 0
        allocated = sum(row["compute"]["nanousd"] for row in report["rows"])
        assert allocated + report["idle"]["nanousd"] == compute[0]["nanousd"]
        assert report["totals"]["total"]["nanousd"] == (
            report["totals"]["unit"]["nanousd"] + allocated + report["idle"]["nanousd"]
        )

        # Bad reports: 4xx naming the field.
        for params, status, param in [
            ({"by": "colour"}, 400, "by"),
            ({"since": "last tuesday"}, 400, "since"),
            ({"team": "nobody"}, 404, "team"),
            ({"customer": "stranger"}, 404, "customer"),
        ]:
            with pytest.raises(ModelportClientError) as caught:
                client.get_costs(**params)
            assert (caught.value.status, caught.value.details.get("param")) == (status, param)


def test_an_hour_without_traffic_is_idle_cost(cost_server: RunningServer) -> None:
    """A replica that ran through an hour nobody called it in: its cost is idle, not anyone's."""
    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    database = cost_server.home / "modelport.db"
    _insert_history(database, hour)
    with cost_server.client() as client:
        # Any price set reloads the book, and with it the price put in the database above.
        client.set_prices({"per_hour": "9"}, hardware="gpu-x")
        report = client.get_costs(
            by="endpoint",
            since=hour.isoformat(),
            until=(hour + timedelta(hours=1)).isoformat(),
        )
    assert report["rows"] == []
    assert report["idle"]["revisions"] == [
        {
            "endpoint": ENDPOINT,
            "revision": "r1",
            "nanousd": 720_000_000,
            "usd": "0.720000000",
            "replica_hours": 2.0,
        }
    ]
    assert report["totals"]["total"]["usd"] == "0.720000000"


def _insert_history(database: Path, hour: datetime) -> None:
    """Two replicas through one past hour, at $0.36 an hour in force since two days ago."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    start, end = hour.strftime(fmt), (hour + timedelta(hours=1)).strftime(fmt)
    since = (hour - timedelta(days=1)).strftime(fmt)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO prices (kind, target, unit, nanousd, effective_from, created_by, "
            "created_at) VALUES ('hardware', 'cpu', 'per_hour', 360000000, ?, 'test', ?)",
            (since, since),
        )
        connection.executemany(
            "INSERT INTO replica_uptime (endpoint, revision, replica, hardware, started_at, "
            "seen_at, stopped_at) VALUES (?, 'r1', ?, 'cpu', ?, ?, ?)",
            [(ENDPOINT, i, start, end, end) for i in (0, 1)],
        )


def test_the_cli_sets_prices_and_reports_costs(cost_server: RunningServer) -> None:
    runner = CliRunner()
    env = {"MODELPORT_URL": cost_server.url, "MODELPORT_TOKEN": cost_server.admin_token}
    result = runner.invoke(
        app, ["prices", "set", "per_image=0.01", "--endpoint", ENDPOINT], env=env
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["prices", "set", "per_image=-1", "--endpoint", ENDPOINT], env=env)
    assert result.exit_code == 1 and "must not be negative" in result.output
    result = runner.invoke(app, ["prices", "list", "--endpoint", ENDPOINT, "--json"], env=env)
    assert result.exit_code == 0 and '"per_image"' in result.output
    result = runner.invoke(
        app, ["cost", "--by", "team", "--since", "2h", "--format", "csv"], env=env
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "team,requests,unit_usd,compute_usd,total_usd"
    assert {line.split(",")[0] for line in lines[1:]} >= {"red", "blue", "(idle)", "(total)"}
    result = runner.invoke(app, ["cost", "--by", "team", "--since", "whenever"], env=env)
    assert result.exit_code == 1 and "since" in result.output


def test_after_a_sigkill_the_open_interval_closes_at_the_last_time_seen(
    cost_server: RunningServer,
) -> None:
    """Runs last: kills the module's server. Its replica's interval, left open, is closed by
    the next start at its last heartbeat, and the new run opens one of its own."""
    database = cost_server.home / "modelport.db"
    cost_server.process.kill()  # no chance to close anything
    cost_server.process.wait()
    with sqlite3.connect(database) as connection:
        left_open = connection.execute(
            "SELECT id, seen_at FROM replica_uptime WHERE stopped_at IS NULL"
        ).fetchall()
    assert len(left_open) == 1
    env = {**BREAST_CANCER_ONLY, "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2"}
    again = start_server(cost_server.home, "--demo", env=env)
    try:
        with again.client() as client:
            client.wait_ready(ENDPOINT, timeout=120)
        with sqlite3.connect(database) as connection:
            closed = connection.execute(
                "SELECT stopped_at FROM replica_uptime WHERE id = ?", (left_open[0][0],)
            ).fetchone()
            still_open = connection.execute(
                "SELECT endpoint, revision FROM replica_uptime WHERE stopped_at IS NULL"
            ).fetchall()
        assert closed == (left_open[0][1],)
        assert still_open == [(ENDPOINT, "r1")]
    finally:
        stop_server(again)
