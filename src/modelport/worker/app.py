"""The replica's ASGI app: V2 health, metadata and inference for the one model it holds."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
from typing import Any

from modelport.core.asgi import Receive, Scope, Send, header, read_body, send_bytes, send_json
from modelport.core.digest import digest_tree
from modelport.core.errors import ModelportError, NotFound
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.runtimes import ModelRuntime, RuntimeSettings, runtime_class
from modelport.runtimes.codecs import check_inputs, decode_request, encode_response

__all__ = ["WorkerApp"]

log = logging.getLogger("modelport.worker")

_JSON = (b"content-type", b"application/json")


async def _exit_when_orphaned(parent: int) -> None:
    """Stop if the supervisor dies without stopping us (say, SIGKILL): no orphan replicas."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event exists for a parent dying
        await asyncio.sleep(1.0)
    log.warning("supervisor %d is gone; shutting down", parent)
    os.kill(os.getpid(), signal.SIGTERM)


class WorkerApp:
    """Raw ASGI app of one replica. Live at once; ready once the model has loaded."""

    def __init__(self, spec: ReplicaSpec, token: str) -> None:
        self.spec = spec
        self._token = token.encode()
        self._runtime: ModelRuntime | None = None
        self._version = str(spec.version).encode()
        self._load_task: asyncio.Task[None] | None = None
        self._orphan_watch: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Verify the artifact digest, then load the runtime. Exits the process on failure."""
        try:
            actual = await asyncio.to_thread(digest_tree, self.spec.artifact_dir)
            if actual != self.spec.artifact_digest:
                raise RuntimeError(
                    f"artifact digest mismatch: expected {self.spec.artifact_digest}, "
                    f"found {actual}; refusing to load"
                )
            runtime = runtime_class(self.spec.runtime)(
                RuntimeSettings(
                    name=self.spec.model,
                    version=self.spec.version,
                    artifact_dir=self.spec.artifact_dir,
                    signature=self.spec.signature,
                    options=self.spec.options,
                )
            )
            await runtime.load()
            self._runtime = runtime
            log.info("model %s:%s loaded", self.spec.model, self.spec.version)
        except Exception:
            log.exception("replica of %s failed to load", self.spec.endpoint)
            # Exit so that the supervisor sees a crash and applies its backoff.
            os.kill(os.getpid(), signal.SIGTERM)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/v2/health/live":
            await send_json(send, 200, {"live": True})
            return
        if path == "/v2/health/ready":
            ready = self._runtime is not None
            await send_json(send, 200 if ready else 503, {"ready": ready})
            return
        token = header(scope, WORKER_TOKEN_HEADER) or b""
        if not hmac.compare_digest(token, self._token):
            await send_json(send, 401, {"error": "this replica only answers its gateway"})
            return
        try:
            await self._model_route(scope, receive, send, path)
        except ModelportError as exc:
            await send_json(send, exc.status, {"error": exc.message})
        except Exception as exc:
            log.exception("inference failed on %s", self.spec.endpoint)
            await send_json(send, 500, {"error": f"model runtime failed: {type(exc).__name__}"})

    async def _model_route(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        prefix = f"/v2/models/{self.spec.endpoint}"
        if not path.startswith(prefix):
            raise NotFound(f"this replica serves '{self.spec.endpoint}' only")
        rest = path[len(prefix) :]
        if rest == "/infer" and scope["method"] == "POST":
            await self._infer(scope, receive, send)
        elif rest == "/ready":
            ready = self._runtime is not None
            await send_json(
                send, 200 if ready else 503, {"name": self.spec.endpoint, "ready": ready}
            )
        elif rest == "":
            await send_json(send, 200, self.metadata())
        else:
            raise NotFound(f"no route {scope['method']} {path}")

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.spec.endpoint,
            "versions": [str(self.spec.version)],
            "platform": self.spec.runtime,
            **self.spec.signature.to_v2_metadata(),
        }

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._runtime
        if runtime is None:
            await send_json(send, 503, {"error": "model is still loading"})
            return
        length = header(scope, b"inference-header-content-length")
        body = await read_body(receive, self.spec.max_body_bytes)
        request = decode_request(body, int(length) if length else None)
        check_inputs(request, self.spec.signature)
        outputs = await runtime.predict(request.inputs)
        payload, header_length = encode_response(
            request, outputs, model_name=self.spec.endpoint, model_version=str(self.spec.version)
        )
        headers = [(b"x-modelport-rows", str(request.rows).encode())]
        if header_length is None:
            headers.append(_JSON)
        else:
            headers.append((b"content-type", b"application/octet-stream"))
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        await send_bytes(send, 200, payload, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._load_task = asyncio.create_task(self.load())
                self._orphan_watch = asyncio.create_task(_exit_when_orphaned(os.getppid()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._runtime is not None:
                    await self._runtime.unload()
                await send({"type": "lifespan.shutdown.complete"})
                return
