"""``python -m modelport.worker``: run one replica on a listening socket handed over by fd.

The supervisor writes a ``ReplicaLaunch`` (the spec, the endpoint's secret, the socket's fd)
as JSON to the worker's standard input: options of any size fit, and nothing of it shows in
``/proc/<pid>/cmdline`` or ``environ``. It owns the listening socket and passes it in, so the
address stays the same across restarts and no port is ever raced for.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

import uvicorn

from modelport.core.replica import ReplicaLaunch
from modelport.observability import tracing
from modelport.observability.logs import configure_logging
from modelport.worker.app import WorkerApp
from modelport.worker.isolation import apply_isolation
from modelport.worker.sandbox import hide_directory


def main() -> None:
    launch = ReplicaLaunch.model_validate_json(sys.stdin.buffer.read())
    # Model code has no business with the supervisor's pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    configure_logging(launch.log_level, launch.log_format)
    if launch.spec.isolation is not None:  # single-threaded still, and no model code yet
        apply_isolation(launch.spec.isolation)
    if launch.hidden_dir is not None:  # before any thread starts, and any model code runs
        hide_directory(launch.hidden_dir, readable=[launch.spec.artifact_dir])
    spec = launch.spec
    # The span exporter's thread starts here, after the sandbox, which binds only threads
    # started after it.
    tracing.configure_tracing(
        launch.otlp_endpoint,
        "modelport-replica",
        {"modelport.endpoint": spec.endpoint, "modelport.revision": spec.revision},
    )
    app = WorkerApp(spec, launch.token)
    asgi: tracing.ASGIApp = app
    if tracing.ENABLED:
        asgi = tracing.traced_replica(
            app,
            endpoint=spec.endpoint,
            revision=spec.revision,
            model=f"{spec.model}:{spec.version}",
            task=spec.task,
        )
    sock = socket.socket(fileno=launch.fd)
    # JSON lines: uvicorn's own loggers go through the root handler instead of its own.
    extra: dict[str, Any] = {"log_config": None} if launch.log_format == "json" else {}
    config = uvicorn.Config(
        asgi,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=launch.log_level,
        timeout_graceful_shutdown=10,
        **extra,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
