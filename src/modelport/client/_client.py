"""The ``Client``: control-plane calls with the admin token, inference with an API key."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport.client._governance import GovernanceCalls
from modelport.client._http import ModelportClientError
from modelport.client._planning import PlanningCalls

__all__ = ["Client", "ModelportClientError"]

_DEFAULT_URL = "http://127.0.0.1:8600"
_V2_TYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_NUMPY_TYPES = {v: k for k, v in _V2_TYPES.items()}


def _home() -> Path:
    return Path(os.environ.get("MODELPORT_HOME", ".modelport")).expanduser()


class Client(GovernanceCalls, PlanningCalls):
    """``Client(url, token)``; both default to ``MODELPORT_URL`` / ``MODELPORT_TOKEN``, then to
    the local server and the admin token in ``$MODELPORT_HOME/admin-token``."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("MODELPORT_URL") or _DEFAULT_URL).rstrip("/")
        if token is None:
            token = os.environ.get("MODELPORT_TOKEN")
        if token is None:
            path = _home() / "admin-token"
            token = path.read_text().strip() if path.exists() else ""
        self._http = httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return self._object("GET", "/healthz")

    # -- artifacts and registry -------------------------------------------------------------

    def upload_artifact(self, path: str | Path) -> dict[str, Any]:
        """Upload a model file, or a directory (sent as a tar), to the artifact store."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact path {str(path)!r} does not exist")
        if path.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for item in sorted(path.rglob("*")):
                    tar.add(item, arcname=item.relative_to(path).as_posix(), recursive=False)
            content: bytes = buffer.getvalue()
            params = {"filename": path.name, "archive": "true"}
        else:
            content = path.read_bytes()
            params = {"filename": path.name}
        return self._object(
            "POST",
            "/api/v1/artifacts",
            params=params,
            content=content,
            headers={"content-type": "application/octet-stream"},
        )

    def create_model(
        self, name: str, task: str, description: str = "", owner: str = ""
    ) -> dict[str, Any]:
        body = {"name": name, "task": task, "description": description, "owner": owner}
        return self._object("POST", "/api/v1/models", json=body)

    def list_models(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/models")

    def get_model(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/models/{name}")

    def delete_model(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/models/{name}")

    def create_version(self, model: str, runtime: str, **fields: Any) -> dict[str, Any]:
        """Fields: ``artifact_digest`` or ``artifact_path``, ``metrics``, ``tags``,
        ``runtime_options``, ``signature``, ``reference_digest``."""
        body = {"runtime": runtime, **fields}
        return self._object("POST", f"/api/v1/models/{model}/versions", json=body)

    def register(
        self, name: str, path: str | Path, *, task: str, runtime: str, **fields: Any
    ) -> dict[str, Any]:
        """Upload ``path`` and add it as the next version of ``name`` (created if new)."""
        try:
            self.get_model(name)
        except ModelportClientError as exc:
            if exc.status != 404:
                raise
            self.create_model(name, task)
        artifact = self.upload_artifact(path)
        return self.create_version(name, runtime, artifact_digest=artifact["digest"], **fields)

    def get_version(self, model: str, version: int) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/models/{model}/versions/{version}")

    def delete_version(self, model: str, version: int) -> None:
        self._call("DELETE", f"/api/v1/models/{model}/versions/{version}")

    def set_alias(self, model: str, alias: str, version: int) -> dict[str, Any]:
        return self._object(
            "PUT", f"/api/v1/models/{model}/aliases/{alias}", json={"version": version}
        )

    def delete_alias(self, model: str, alias: str) -> None:
        self._call("DELETE", f"/api/v1/models/{model}/aliases/{alias}")

    # -- endpoints --------------------------------------------------------------------------

    def create_endpoint(
        self,
        name: str,
        model: str,
        replicas: int = 1,
        batching: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``batching``: ``{"max_batch_size": 32, "max_wait_ms": 5}`` (tabular and vision)."""
        body = {"name": name, "model": model, "replicas": replicas, "batching": batching}
        return self._object("POST", "/api/v1/endpoints", json=body)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/endpoints")

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/api/v1/endpoints/{name}")

    def delete_endpoint(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/endpoints/{name}")

    def wait_ready(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until every replica of the endpoint is ready; fail fast if it keeps crashing."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.get_endpoint(name)
            if endpoint["status"] == "ready":
                return endpoint
            if endpoint["status"] == "failed":
                errors = {r["last_error"] for r in endpoint["replica_status"] if r["last_error"]}
                raise ModelportClientError(
                    503, "endpoint_failed", f"endpoint {name!r} keeps failing: {'; '.join(errors)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpoint {name!r} not ready after {timeout}s: {endpoint}")
            time.sleep(0.2)

    # -- intent, revisions and rollouts ------------------------------------------------------

    def apply(
        self, intent: str | Path, *, dry_run: bool = False, filename: str | None = None
    ) -> dict[str, Any]:
        """Apply a ``modelport.yaml`` (its text, or a path to it); ``dry_run`` only diffs."""
        if isinstance(intent, Path):
            filename, intent = filename or intent.name, intent.read_text()
        body = {"intent": intent, "dry_run": dry_run, "filename": filename or "modelport.yaml"}
        return self._object("POST", "/api/v1/apply", json=body)

    def diff(self, intent: str | Path) -> dict[str, Any]:
        """What applying the intent would change, changing nothing."""
        return self.apply(intent, dry_run=True)

    def list_revisions(self, endpoint: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/api/v1/endpoints/{endpoint}/revisions")

    def rollout(self, endpoint: str) -> dict[str, Any]:
        """The rollout in progress, or the last one, with its live window and events."""
        return self._object("GET", f"/api/v1/endpoints/{endpoint}/rollout")

    def rollout_history(self, endpoint: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/api/v1/endpoints/{endpoint}/rollouts")

    def rollout_action(self, endpoint: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume``, ``promote``, ``rollback``, ``abort`` or ``approve``."""
        return self._object("POST", f"/api/v1/endpoints/{endpoint}/rollout/{action}")

    def wait_rollout(
        self,
        endpoint: str,
        states: tuple[str, ...] = ("promoted", "rolled_back", "aborted"),
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        """Poll until the endpoint's latest rollout reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        while True:
            rollout = self.rollout(endpoint)
            if rollout["state"] in states:
                return rollout
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout of {endpoint!r} still {rollout['state']}: {rollout}")
            time.sleep(0.2)

    def wait_applied(self, result: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """After ``apply``: wait until the endpoint serves what was applied (its rollout
        promoted, a ready replica of the serving revision routed) and return the endpoint.

        Raises ``ModelportClientError`` naming the reason when the rollout is rolled back or
        aborted, or the endpoint keeps failing; ``TimeoutError`` after ``timeout`` seconds."""
        name = result["endpoint"]
        deadline = time.monotonic() + timeout
        if result["action"] == "rollout":
            while True:
                rollout = self.rollout(name)
                state = rollout["state"]
                if state == "promoted":
                    break
                if state in ("rolled_back", "aborted"):
                    raise ModelportClientError(
                        409,
                        f"rollout_{state}",
                        f"rollout of {name!r} ({rollout['from_revision']} -> "
                        f"{rollout['to_revision']}) {state.replace('_', ' ')}: "
                        f"{rollout['reason']}",
                    )
                if time.monotonic() > deadline:
                    # A pause says why: a person, a shadow's end, a policy, an approval.
                    why = rollout["reason"] or "waiting for 'modelport rollout promote'"
                    waiting = f" ({why})" if state == "paused" else ""
                    raise TimeoutError(
                        f"rollout of {name!r} still {state}{waiting} after {timeout:g} s"
                    )
                time.sleep(0.2)
        try:
            return self.wait_ready(name, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            endpoint = self.get_endpoint(name)
            raise TimeoutError(
                f"endpoint {name!r} still {endpoint['status']} after {timeout:g} s"
            ) from None

    def get_usage(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent requests the gateway metered, newest first, with their units."""
        return self._list("GET", "/api/v1/usage/recent", params={"limit": limit})

    def usage_report(
        self,
        by: str = "endpoint",
        since: str | None = None,
        until: str | None = None,
        **filters: str,
    ) -> dict[str, Any]:
        """Usage summed per ``by`` (team, project, customer, endpoint, revision, key) over
        ``[since, until)`` (``24h``, ``7d``, ISO 8601), filtered by ``team=``, ``customer=``..."""
        params = {"by": by, "since": since, "until": until, **filters}
        return self._object(
            "GET", "/api/v1/usage", params={k: v for k, v in params.items() if v is not None}
        )

    def usage_report_csv(
        self,
        by: str = "endpoint",
        since: str | None = None,
        until: str | None = None,
        **filters: str,
    ) -> str:
        """The same report as CSV text."""
        params = {"by": by, "since": since, "until": until, "format": "csv", **filters}
        response = self._http.get(
            "/api/v1/usage", params={k: v for k, v in params.items() if v is not None}
        )
        if response.status_code >= 400:
            self._call("GET", "/api/v1/usage", params=params)  # raises the API's error
        return response.text

    def usage_events(
        self,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        **filters: str,
    ) -> list[dict[str, Any]]:
        """Raw usage events, newest first (at most 1000)."""
        params = {"since": since, "until": until, "limit": limit, **filters}
        return self._list(
            "GET",
            "/api/v1/usage/events",
            params={k: v for k, v in params.items() if v is not None},
        )

    # -- inference (use a client made with an API key) --------------------------------------

    def infer(self, endpoint: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Call ``/v2/models/{endpoint}/infer``; inputs and outputs are numpy arrays."""
        tensors = []
        for name, value in inputs.items():
            array = np.asarray(value)
            if array.dtype == np.float64:
                array = array.astype(np.float32)  # what tabular models almost always take
            datatype = _V2_TYPES.get(array.dtype.name)
            if datatype is None:
                raise TypeError(f"input {name!r} has unsupported dtype {array.dtype}")
            tensors.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "data": array.ravel().tolist(),
                }
            )
        result = self._call("POST", f"/v2/models/{endpoint}/infer", json={"inputs": tensors})
        return {
            out["name"]: np.asarray(
                out["data"], dtype=_NUMPY_TYPES.get(out["datatype"], object)
            ).reshape(out["shape"])
            for out in result["outputs"]
        }

    def model_metadata(self, endpoint: str) -> dict[str, Any]:
        return self._object("GET", f"/v2/models/{endpoint}")

    # -- drift ------------------------------------------------------------------------------

    def get_drift(self, endpoint: str) -> dict[str, Any]:
        """Each feature's drift score, threshold and status, per running revision."""
        return self._object("GET", f"/api/v1/endpoints/{endpoint}/drift")

    # -- cost -------------------------------------------------------------------------------

    def set_prices(
        self,
        prices: dict[str, str],
        *,
        endpoint: str | None = None,
        model: str | None = None,
        hardware: str | None = None,
        effective_from: str | None = None,
    ) -> list[dict[str, Any]]:
        """Price units (``{"per_1k_rows": "0.002"}``, decimal USD strings) of one endpoint,
        model version (``name:3``) or hardware type (``{"per_hour": "0.50"}``), in force from
        ``effective_from`` (ISO 8601; default now)."""
        body: dict[str, Any] = {"prices": prices}
        for name, value in (
            ("endpoint", endpoint),
            ("model", model),
            ("hardware", hardware),
            ("effective_from", effective_from),
        ):
            if value is not None:
                body[name] = value
        return self._list("POST", "/api/v1/prices", json=body)

    def list_prices(
        self, *, endpoint: str | None = None, model: str | None = None, hardware: str | None = None
    ) -> list[dict[str, Any]]:
        """Every price ever set (oldest first), or one target's; ``in_force`` marks today's."""
        params = {"endpoint": endpoint, "model": model, "hardware": hardware}
        return self._list(
            "GET", "/api/v1/prices", params={k: v for k, v in params.items() if v is not None}
        )

    def get_costs(
        self, by: str = "endpoint", since: str = "24h", until: str | None = None, **filters: str
    ) -> dict[str, Any]:
        """Cost per ``by`` (team, project, customer, endpoint, revision, key) over whole hours;
        ``filters``: team, project, customer, endpoint, key."""
        params = {"by": by, "since": since, "until": until, **filters}
        return self._object(
            "GET", "/api/v1/costs", params={k: v for k, v in params.items() if v is not None}
        )

    def get_slo(self, endpoint: str) -> dict[str, Any]:
        """The endpoint's error budget left and burn rates per objective, with its open SLO
        alerts; no objectives (and a ``message``) when it has no SLO."""
        return self._object("GET", f"/api/v1/endpoints/{endpoint}/slo")

    def create_webhook(
        self, url: str, *, secret: str | None = None, description: str = ""
    ) -> dict[str, Any]:
        """Send alert notices to ``url``; the answer holds the secret, shown only then."""
        body: dict[str, Any] = {"url": url, "description": description}
        if secret is not None:
            body["secret"] = secret
        return self._object("POST", "/api/v1/alerts/webhooks", json=body)

    def list_webhooks(self) -> list[dict[str, Any]]:
        return self._list("GET", "/api/v1/alerts/webhooks")

    def delete_webhook(self, webhook_id: str) -> None:
        self._call("DELETE", f"/api/v1/alerts/webhooks/{webhook_id}")

    def list_alerts(
        self, *, state: str = "all", endpoint: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Alert episodes (open first, then the most recent closed), ``state`` open, closed
        or all."""
        params: dict[str, Any] = {"state": state, "limit": limit}
        if endpoint is not None:
            params["endpoint"] = endpoint
        return self._list("GET", "/api/v1/alerts", params=params)
