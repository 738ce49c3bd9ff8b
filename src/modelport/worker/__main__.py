"""``python -m modelport.worker``: run one replica on a listening socket handed over by fd.

The supervisor owns the listening socket and passes it in (``MODELPORT_WORKER_FD``), so the
address stays the same across restarts and no port is ever raced for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import uvicorn

from modelport.core.replica import ReplicaSpec
from modelport.worker.app import WorkerApp


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MODELPORT_LOG_LEVEL", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    spec = ReplicaSpec.model_validate_json(os.environ["MODELPORT_WORKER_SPEC"])
    # Read once, then drop it from the environment so that model code cannot see it.
    token = os.environ.pop("MODELPORT_WORKER_TOKEN")
    sock = socket.socket(fileno=int(os.environ["MODELPORT_WORKER_FD"]))
    config = uvicorn.Config(
        WorkerApp(spec, token),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=os.environ.get("MODELPORT_LOG_LEVEL", "info"),
        timeout_graceful_shutdown=10,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
