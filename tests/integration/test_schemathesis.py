"""Schemathesis against ``/api/v1/openapi.json`` on a real server: no input is a 5xx.

Every operation of the control plane's own schema is called with generated requests, valid
and invalid, with the admin token. A client's mistake must be a 4xx naming what was wrong;
any 5xx fails the test with the request that caused it. The run is bounded (a few examples
per operation, ~1-2 minutes in all).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration.conftest import demo_server

from .conftest import BREAST_CANCER_ONLY, RunningServer

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("schemathesis") / "home"
    with demo_server(home, "breast-cancer", env=BREAST_CANCER_ONLY) as running:
        yield running


@pytest.fixture(scope="module")
def auth(srv: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.admin_token}"}


@pytest.fixture(scope="module")
def api_schema(srv: RunningServer, auth: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{srv.url}/api/v1/openapi.json", headers=auth)


def _server_errors(operation: Any, mode: GenerationMode, auth: dict[str, str]) -> list[str]:
    """Run one operation's generated cases; describe each one answered with a 5xx."""
    found: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run: a failure here is reproducible
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(headers=auth, timeout=60)
        if response.status_code >= 500:
            found.append(
                f"{case.method} {case.formatted_path} ({mode}) -> {response.status_code}: "
                f"{response.text[:300]}\n  {case.as_curl_command()}"
            )
        elif response.status_code >= 400:
            # Every refusal has the control plane's error shape and says what was wrong.
            error = response.json()["error"]
            assert error["code"] and error["message"], response.text

    try:
        run()
    except Unsatisfiable:  # negative mode: an operation with no input cannot be sent invalid
        assert mode is GenerationMode.NEGATIVE, operation
    return found


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_is_a_server_error(
    api_schema: Any, auth: dict[str, str], mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20  # the whole API, not an empty schema
    found = [error for op in operations for error in _server_errors(op, mode, auth)]
    assert not found, "\n".join(found)


def test_the_server_still_serves_after_the_run(srv: RunningServer, auth: dict[str, str]) -> None:
    assert httpx.get(f"{srv.url}/healthz").status_code == 200
    endpoint = httpx.get(f"{srv.url}/api/v1/endpoints/breast-cancer", headers=auth)
    assert endpoint.status_code == 200
    assert endpoint.json()["status"] == "ready"
