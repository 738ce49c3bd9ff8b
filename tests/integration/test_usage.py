"""Durable usage: exact units per team and customer, reports, bad inputs, and a SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.client import Client, ModelportClientError
from tests.integration.conftest import (
    BREAST_CANCER_ONLY,
    RunningServer,
    alive,
    demo_server,
    ensure_project,
    open_to,
    start_server,
    stop_server,
    team_key,
    wait_for,
)

pytestmark = pytest.mark.integration

FAST_LOADS = {**BREAST_CANCER_ONLY, "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2"}
INFER = "/v2/models/breast-cancer/infer"


def rows(count: int) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [count, 30], "data": [0.5] * 30 * count}
        ]
    }


@pytest.fixture(scope="module")
def usage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("usage") / "home"
    with demo_server(home, "breast-cancer", env=FAST_LOADS) as running:
        yield running


# Teams whose keys call breast-cancer here: each key is of a project of its team.
TEAMS = ("search", "ads", "cli-team", "loader-kill")


@pytest.fixture(scope="module")
def admin(usage_server: RunningServer) -> Iterator[Client]:
    with usage_server.client() as client:
        for team in TEAMS:
            ensure_project(usage_server, team)
        open_to(client, "breast-cancer", "breast-cancer:1", [f"team:{team}" for team in TEAMS])
        yield client


def data_plane(server: RunningServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})


def settled(admin: Client, expected_requests: int, **filters: str) -> dict[str, object]:
    """The report once the loader has caught up with ``expected_requests`` requests."""
    report: dict[str, object] = {}

    def caught_up() -> bool:
        nonlocal report
        report = admin.usage_report(**filters)
        total = report["total"]
        assert isinstance(total, dict)
        return bool(total["requests"] >= expected_requests)

    wait_for(caught_up, timeout=20, message=f"{expected_requests} requests in the usage report")
    return report


def test_known_rows_are_reported_exactly_per_team_and_customer(
    usage_server: RunningServer, admin: Client
) -> None:
    search = admin.create_key("search", "search-key", customers=["acme"])
    ads = admin.create_key("ads", "ads-key", customers=["globex"])
    assert search["team"] == "search"
    sent = {("search", "acme"): [2, 5, 1], ("search", ""): [3], ("ads", "globex"): [4, 4]}
    keys = {"search": search["key"], "ads": ads["key"]}
    statuses = []
    for (team, customer), counts in sent.items():
        with data_plane(usage_server, keys[team]) as v2:
            for count in counts:
                headers = {"X-Modelport-Customer": customer} if customer else {}
                statuses.append(v2.post(INFER, json=rows(count), headers=headers).status_code)
    assert statuses == [200] * 6
    # The in-memory view shows them at once, before any load or fan-out tick.
    recent = admin.get_usage(limit=6)
    assert sorted(r["units"]["rows"] for r in recent) == [1, 2, 3, 4, 4, 5]
    assert {r["team"] for r in recent} == {"search", "ads"}

    by_customer = settled(admin, 4, by="customer", since="1h", team="search")
    assert {(r["customer"], r["requests"], r["rows"]) for r in by_customer["rows"]} == {
        ("acme", 3, 8),
        ("", 1, 3),
    }
    by_team = settled(admin, 6, by="team", since="1h")
    teams = {r["team"]: (r["requests"], r["rows"]) for r in by_team["rows"]}
    assert teams["search"] == (4, 11)
    assert teams["ads"] == (2, 8)
    by_project = admin.usage_report(by="project", since="1h", customer="globex")
    assert [(r["project"], r["rows"]) for r in by_project["rows"]] == [("ads", 8)]

    # The raw events carry who, what and how long; they sum to the report.
    events = admin.usage_events(since="1h", team="search", limit=1000)
    assert len(events) == 4
    assert len({e["event_id"] for e in events}) == 4
    event = events[0]
    assert event["key_id"] == search["id"]
    assert (event["endpoint"], event["revision"], event["model"]) == (
        "breast-cancer",
        "r1",
        "breast-cancer",
    )
    assert event["model_version"] == 1 and event["task"] == "tabular"
    assert event["status"] == 200 and event["judged"] is True and event["streamed"] is False
    assert 0 < event["upstream_ms"] <= event["latency_ms"]
    assert sum(e["rows"] for e in events) == 11

    # CSV: the same rows.
    text = admin.usage_report_csv(by="customer", since="1h", team="search")
    table = list(csv.DictReader(io.StringIO(text)))
    assert {(r["customer"], r["rows"]) for r in table} == {("acme", "8"), ("", "3")}


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"by": "colour"}, 400, "by"),
        ({"by": "team", "since": "yesterday"}, 400, "since"),
        ({"by": "team", "since": "24x"}, 400, "since"),
        ({"by": "team", "until": "2026-02-30T00:00:00"}, 400, "until"),
        ({"by": "team", "since": "1h", "until": "2h"}, 400, "since"),
        ({"by": "team", "team": "nobody-has-this"}, 404, "team"),
        ({"by": "team", "format": "xml"}, 400, "format"),
    ],
)
def test_bad_report_parameters_are_4xx_naming_them(
    usage_server: RunningServer, admin: Client, params: dict[str, str], status: int, field: str
) -> None:
    response = httpx.get(
        f"{usage_server.url}/api/v1/usage",
        params=params,
        headers={"Authorization": f"Bearer {usage_server.admin_token}"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["details"]["param"] == field
    assert field in error["message"]


def test_the_cli_reports_usage_as_a_table_json_or_csv(
    usage_server: RunningServer, admin: Client
) -> None:
    key = admin.create_key("cli-team", "cli-usage", customers=["cli-customer"])["key"]
    with data_plane(usage_server, key) as v2:
        for count in (2, 7):
            headers = {"X-Modelport-Customer": "cli-customer"}
            assert v2.post(INFER, json=rows(count), headers=headers).status_code == 200
    settled(admin, 2, by="customer", since="1h", team="cli-team")
    runner = CliRunner()

    def usage(*args: str) -> tuple[int, str]:
        server = ["--url", usage_server.url, "--token", usage_server.admin_token]
        result = runner.invoke(app, ["usage", *args, *server])
        return result.exit_code, result.output

    code, output = usage(
        "--by", "customer", "--since", "1h", "--team", "cli-team", "--format", "csv"
    )
    assert code == 0, output
    (row,) = csv.DictReader(io.StringIO(output))
    assert (row["customer"], row["requests"], row["rows"]) == ("cli-customer", "2", "9")
    code, output = usage(
        "--by", "customer", "--since", "1h", "--team", "cli-team", "--format", "json"
    )
    assert code == 0, output
    assert json.loads(output)["total"]["rows"] == 9
    code, output = usage("--by", "customer", "--since", "1h", "--team", "cli-team")
    assert code == 0, output
    assert "cli-customer" in output and "total" in output
    code, output = usage("--by", "team", "--since", "last week")
    assert code == 1
    assert "since" in output


def test_a_bad_team_stores_no_key(admin: Client) -> None:
    before = len(admin.list_keys())
    with pytest.raises(ModelportClientError) as caught:
        admin.create_key("default", "bad", team="Not A Team")
    assert caught.value.status == 400
    assert caught.value.details["param"] == "team"
    assert len(admin.list_keys()) == before


def _drive(
    url: str, key: str, stop: threading.Event, tally: Counter[str], lock: threading.Lock
) -> None:
    """Send inferences until ``stop``; count answered (any status), broken and unsent ones."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as v2:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                response = v2.post(INFER, json=rows(1), headers={"X-Modelport-Customer": "kill"})
                outcome = f"status {response.status_code}"
            except httpx.ConnectError:
                outcome = "never sent"  # the server was already gone: it cannot have seen it
                time.sleep(0.05)
            except httpx.TransportError:
                outcome = "broken"  # sent, but the connection died before an answer came
            with lock:
                tally[outcome] += 1
            time.sleep(0.015)


def loader_pids(server: RunningServer) -> list[int]:
    """The usage loader processes the server started (children in sessions of their own)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.process.pid and b"modelport.control.usage_process" in cmdline:
            found.append(int(proc.name))
    return found


def test_a_killed_loader_is_started_again_and_loses_nothing(
    usage_server: RunningServer, admin: Client
) -> None:
    key = admin.create_key("loader-kill", "loader-kill")["key"]
    (first,) = loader_pids(usage_server)
    os.kill(first, signal.SIGKILL)
    with data_plane(usage_server, key) as http:
        for _ in range(5):  # journaled while no loader runs
            assert http.post(INFER, json=rows(2)).status_code == 200
    wait_for(
        lambda: len(loader_pids(usage_server)) == 1 and loader_pids(usage_server) != [first],
        timeout=20,
        message="a new usage loader",
    )
    report = settled(admin, 5, team="loader-kill")
    assert report["total"]["requests"] == 5  # type: ignore[index]
    assert report["total"]["rows"] == 10  # type: ignore[index]
    assert "the usage loader exited" in usage_server.log.read_text()


def test_sigkill_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_server(home, "--demo", env=FAST_LOADS)
    try:
        with first.client() as admin:
            pids = [r["pid"] for r in admin.wait_ready("breast-cancer")["replica_status"]]
            key = admin.create_key("default", "chaos", customers=["kill"])["key"]
        stop, lock, tally = threading.Event(), threading.Lock(), Counter[str]()
        threads = [
            threading.Thread(target=_drive, args=(first.url, key, stop, tally, lock))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        time.sleep(2.5)  # loaded: answers journaled, some loaded, some not, some in flight
        first.process.kill()  # SIGKILL: no shutdown, no final load, no fsync
        first.process.wait()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(15)
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15, message="replicas")
    finally:
        stop_server(first)
    answered = sum(count for outcome, count in tally.items() if outcome.startswith("status"))
    broken = tally["broken"]
    assert answered > 100, tally
    assert tally["status 200"] == answered, tally

    second = start_server(home, "--demo", env=FAST_LOADS)
    try:
        with second.client() as admin:
            # The killed run's journal is loaded at start-up, before any new request.
            report = settled(admin, answered, by="customer", since="1h", customer="kill")
            time.sleep(1)  # one more load: nothing more may appear
            report = admin.usage_report(by="customer", since="1h", customer="kill")
            counted = report["total"]["requests"]
            events = admin.usage_events(since="1h", customer="kill", limit=1000)
            journal = sorted(p.name for p in (home / "usage").iterdir())
    finally:
        stop_server(second)
    assert answered <= counted <= answered + broken, (counted, tally)
    if len(events) < 1000:
        assert len(events) == counted  # rollups and raw events agree
        assert len({e["request_id"] for e in events}) == counted  # no request twice
    assert len(journal) <= 1, journal  # the killed run's segments were loaded and deleted


def test_chats_are_metered_with_their_tokens_and_time_to_first_token(tmp_path: Path) -> None:
    with (
        demo_server(
            tmp_path / "home",
            "chat-small",
            env={"MODELPORT_DEMO_MODELS": "chat-small", "MODELPORT_USAGE_LOAD_INTERVAL_S": "0.2"},
        ) as server,
        server.client() as admin,
    ):
        key = team_key(server, admin, "assistants", "chat", customers=["chat-customer"])["key"]
        open_to(admin, "chat-small", "chat-small:1", ["team:assistants"], task="chat")
        chat = {
            "model": "chat-small",
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 8,
            "user": "chat-customer",  # OpenAI's field names the customer
        }
        with data_plane(server, key) as v1:
            whole = v1.post("/v1/chat/completions", json=chat, timeout=60)
            assert whole.status_code == 200, whole.text
            with v1.stream(
                "POST", "/v1/chat/completions", json={**chat, "stream": True}, timeout=60
            ) as stream:
                assert stream.status_code == 200
                text = "".join(stream.iter_text())
        assert text.rstrip().endswith("data: [DONE]")
        settled(admin, 2, by="customer", since="1h", customer="chat-customer")
        events = admin.usage_events(since="1h", customer="chat-customer")
    streamed = next(e for e in events if e["streamed"])
    answered = next(e for e in events if not e["streamed"])
    usage = whole.json()["usage"]
    assert (answered["input_tokens"], answered["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert answered["ttft_ms"] is None
    assert answered["team"] == "assistants" and answered["task"] == "chat"
    assert streamed["input_tokens"] == usage["prompt_tokens"]
    assert 0 < streamed["output_tokens"] <= 8
    assert 0 < streamed["ttft_ms"] <= streamed["latency_ms"]
    assert 0 < streamed["upstream_ms"] <= streamed["latency_ms"]
