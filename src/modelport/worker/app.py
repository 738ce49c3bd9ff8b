"""The replica's ASGI app: health, then the protocol its task speaks (V2 or OpenAI)."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import signal

from modelport.core.asgi import Receive, Scope, Send, header, send_json
from modelport.core.digest import digest_tree
from modelport.core.errors import ModelportError
from modelport.core.replica import WORKER_TOKEN_HEADER, ReplicaSpec
from modelport.observability import logs, tracing
from modelport.runtimes import ModelRuntime, RuntimeSettings, runtime_class
from modelport.worker.openai import OpenAIHandler
from modelport.worker.v2 import V2Handler

__all__ = ["WorkerApp"]

log = logging.getLogger("modelport.worker")

_OPENAI_TASKS = frozenset({"chat", "completion", "embedding", "asr"})


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
        self._openai = spec.task in _OPENAI_TASKS
        self._handler = OpenAIHandler(spec) if self._openai else V2Handler(spec)
        self._slots: asyncio.Semaphore | None = None
        self._tasks: list[asyncio.Task[None]] = []

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
                    max_image_pixels=self.spec.max_image_pixels,
                    max_audio_seconds=self.spec.max_audio_seconds,
                )
            )
            await runtime.load()
            # Requests past the limit wait their turn here instead of piling onto the model.
            limit = self.spec.max_concurrency or runtime.max_concurrency
            if self.spec.batching:  # the batcher serializes model calls; let a batch gather
                limit = max(limit, 4 * int(self.spec.batching.get("max_batch_size", 32)))
            self._slots = asyncio.Semaphore(limit)
            self._runtime = runtime
            # The model and its libraries live as long as the replica: freeze them so that a
            # full garbage collection never walks them mid-request (it stalls the replica's
            # loop for tens of milliseconds otherwise; see bench/gc_pause.py for the server).
            gc.collect()
            gc.freeze()
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
        logs.bind_request(header(scope, b"x-request-id"))  # the gateway's id, on every line
        try:
            if self._slots is None:
                await self._handler(scope, receive, send, None)
            else:
                async with self._slots:
                    await self._handler(scope, receive, send, self._runtime)
        except ModelportError as exc:
            body = exc.to_openai() if self._openai else {"error": exc.message}
            await send_json(send, exc.status, body)
        except Exception as exc:
            log.exception("inference failed on %s", self.spec.endpoint)
            message = f"model runtime failed: {type(exc).__name__}"
            body = (
                {"error": {"message": message, "type": "server_error"}}
                if self._openai
                else {"error": message}
            )
            await send_json(send, 500, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._tasks = [
                    asyncio.create_task(self.load()),
                    asyncio.create_task(_exit_when_orphaned(os.getppid())),
                ]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._runtime is not None:
                    await self._runtime.unload()
                await asyncio.to_thread(tracing.shutdown_tracing)  # the spans still batched
                await send({"type": "lifespan.shutdown.complete"})
                return
