"""Hostile input to every governance and planning write route on a real server: wrong types,
deep nesting, huge bodies and concurrent writes are each a clear 4xx (or one winner), and
nothing is half-written.

Each write route is listed once with a valid body and the list it shows up in, so a route
added to the table is checked against every kind of bad input below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

POLICY = """\
name: hostile-probe
mode: audit
stages: [apply]
rules:
  - name: anything
    require: {intent.endpoint: {exists: true}}
    message: Name the endpoint.
"""

INTENT = "endpoint: hostile-ep\ntask: tabular\nmodel: m:1\n"


@dataclass(frozen=True)
class Write:
    method: str
    path: str
    body: dict[str, Any]
    listed_at: str  # GET path whose answer must not change after a refused write


WRITES = [
    Write("POST", "/api/v1/teams", {"name": "hostile-team"}, "/api/v1/teams"),
    Write("POST", "/api/v1/projects", {"name": "hostile-p", "team": "default"}, "/api/v1/projects"),
    Write("POST", "/api/v1/users", {"name": "hostile-user"}, "/api/v1/users"),
    Write(
        "POST",
        "/api/v1/teams/default/members",
        {"user": "probe", "role": "viewer"},
        "/api/v1/teams/default",
    ),
    Write(
        "POST",
        "/api/v1/keys",
        {"project": "default", "name": "hostile", "scopes": ["ep"], "permissions": ["pin"]},
        "/api/v1/keys",
    ),
    Write("PUT", "/api/v1/limits/project/default", {"rpm": 5, "tpm": 10}, "/api/v1/limits"),
    Write(
        "PUT",
        "/api/v1/budgets/project/default",
        {"daily_usd": "1", "monthly_usd": 2},
        "/api/v1/budgets",
    ),
    Write("PUT", "/api/v1/policies/hostile-probe", {"text": POLICY}, "/api/v1/policies"),
    # planning (issue 11): environments are stored; a plan and a comparison store nothing
    # (and start nothing) when their body is refused
    Write(
        "POST",
        "/api/v1/environments",
        {"name": "hostile-env", "kind": "isolated", "hardware": ["cpu"], "memory_mb": 512},
        "/api/v1/environments",
    ),
    Write(
        "PUT",
        "/api/v1/environments/sandbox",
        {"kind": "shared", "hardware": ["cpu"], "sensitivities": ["public"]},
        "/api/v1/environments",
    ),
    Write("POST", "/api/v1/plan", {"intent": INTENT, "filename": "m.yaml"}, "/api/v1/endpoints"),
    Write(
        "POST",
        "/api/v1/compare",
        {"intent": INTENT, "candidates": ["m:1"], "eval": {"format": "csv", "text": "a\n1\n"}},
        "/api/v1/endpoints",
    ),
]
IDS = [f"{w.method} {w.path}" for w in WRITES]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("hostile") / "home")
    try:
        with running.client() as admin:
            admin.create_user("probe")  # the member route grants it a role
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def http(srv: RunningServer) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {srv.admin_token}"}
    with httpx.Client(base_url=srv.url, headers=auth, timeout=60) as client:
        yield client


def _listed(http: httpx.Client, write: Write) -> Any:
    answer = http.get(write.listed_at)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _problem_names(answer: httpx.Response, field: str) -> bool:
    error = answer.json()["error"]
    return field in error["message"] or field in str(error["details"])


@pytest.mark.parametrize("write", WRITES, ids=IDS)
def test_every_field_of_the_wrong_type_is_a_4xx_naming_it(http: httpx.Client, write: Write) -> None:
    before = _listed(http, write)
    for field in write.body:
        for wrong in ([1, 2], {"a": {"b": 1}}, -1, True):
            if isinstance(write.body[field], list) and isinstance(wrong, list):
                continue  # a list of numbers where names go is checked below
            body = {**write.body, field: wrong}
            answer = http.request(write.method, write.path, json=body)
            assert 400 <= answer.status_code < 500, (field, wrong, answer.text)
            assert _problem_names(answer, field), (field, wrong, answer.text)
    for field, value in write.body.items():
        if isinstance(value, list):
            answer = http.request(write.method, write.path, json={**write.body, field: [1, 2]})
            assert 400 <= answer.status_code < 500, (field, answer.text)
            assert _problem_names(answer, field), (field, answer.text)
    assert _listed(http, write) == before


@pytest.mark.parametrize("write", WRITES, ids=IDS)
def test_deeply_nested_json_is_a_4xx_not_a_500(http: httpx.Client, write: Write) -> None:
    before = _listed(http, write)
    depth = 100_000  # 200 KB: inside the body limit, far past any parser's recursion
    field = next(iter(write.body))
    nested = f'{{"{field}": ' + "[" * depth + "]" * depth + "}"
    answer = http.request(
        write.method, write.path, content=nested, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["code"] == "invalid_json"
    assert "nests too deeply" in answer.json()["error"]["message"]
    assert _listed(http, write) == before


@pytest.mark.parametrize("write", WRITES, ids=IDS)
def test_a_huge_body_is_refused_before_it_is_parsed(http: httpx.Client, write: Write) -> None:
    before = _listed(http, write)
    field = next(iter(write.body))
    huge = {**write.body, field: "x" * (2 * 1024 * 1024)}
    answer = http.request(write.method, write.path, json=huge)
    assert answer.status_code == 413, answer.text[:300]
    assert "MODELPORT_MAX_CONTROL_BODY_BYTES" in answer.json()["error"]["message"]
    assert _listed(http, write) == before


@pytest.mark.parametrize(
    ("path", "body", "listed_at"),
    [
        ("/api/v1/teams", {"name": "race-team"}, "/api/v1/teams"),
        ("/api/v1/projects", {"name": "race-p", "team": "default"}, "/api/v1/projects"),
        ("/api/v1/users", {"name": "race-user"}, "/api/v1/users"),
        ("/api/v1/environments", {"name": "race-env", "kind": "dedicated"}, "/api/v1/environments"),
    ],
)
def test_concurrent_creates_of_one_name_make_exactly_one(
    srv: RunningServer, http: httpx.Client, path: str, body: dict[str, Any], listed_at: str
) -> None:
    async def race() -> list[int]:
        auth = {"Authorization": f"Bearer {srv.admin_token}"}
        async with httpx.AsyncClient(base_url=srv.url, headers=auth, timeout=60) as client:
            answers = await asyncio.gather(*(client.post(path, json=body) for _ in range(12)))
        return sorted(a.status_code for a in answers)

    assert asyncio.run(race()) == [201] + [409] * 11
    names = [item["name"] for item in http.get(listed_at).json()]
    assert names.count(body["name"]) == 1


@pytest.mark.parametrize(
    ("path", "field", "values", "listed_at"),
    [
        ("/api/v1/limits/team/default", "rpm", list(range(1, 13)), "/api/v1/limits"),
        ("/api/v1/budgets/team/default", "daily_usd", list(range(1, 13)), "/api/v1/budgets"),
    ],
)
def test_concurrent_settings_of_one_scope_leave_one_whole_setting(
    srv: RunningServer,
    http: httpx.Client,
    path: str,
    field: str,
    values: list[int],
    listed_at: str,
) -> None:
    async def race() -> list[int]:
        auth = {"Authorization": f"Bearer {srv.admin_token}"}
        async with httpx.AsyncClient(base_url=srv.url, headers=auth, timeout=60) as client:
            answers = await asyncio.gather(*(client.put(path, json={field: v}) for v in values))
        return [a.status_code for a in answers]

    statuses = asyncio.run(race())
    # Each write wins or loses whole: 200, or 409 when a concurrent one took the row first.
    assert set(statuses) <= {200, 409} and 200 in statuses
    rows = [r for r in http.get(listed_at).json() if (r["kind"], r["name"]) == ("team", "default")]
    assert len(rows) == 1
    stored = rows[0][field] if field in rows[0] else rows[0]["daily"]["cap_usd"]
    assert float(stored) in {float(v) for v in values}


def test_rotating_with_a_bad_grace_is_a_4xx_naming_it_and_keeps_the_key(
    http: httpx.Client,
) -> None:
    created = http.post("/api/v1/keys", json={"project": "default", "name": "rotated"})
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    before = http.get("/api/v1/keys").json()
    for wrong in ([1], {"s": 1}, -1, True, 10**30, "1h"):
        answer = http.post(f"/api/v1/keys/{key_id}/rotate", json={"grace": wrong})
        assert 400 <= answer.status_code < 500, (wrong, answer.text)
        assert _problem_names(answer, "grace"), (wrong, answer.text)
    assert http.get("/api/v1/keys").json() == before
