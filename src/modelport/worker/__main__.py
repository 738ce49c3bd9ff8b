"""``python -m modelport.worker``: run one replica on a listening socket handed over by fd.

The supervisor writes a ``ReplicaLaunch`` (the spec, the endpoint's secret, the socket's fd)
as JSON to the worker's standard input: options of any size fit, and nothing of it shows in
``/proc/<pid>/cmdline`` or ``environ``. It owns the listening socket and passes it in, so the
address stays the same across restarts and no port is ever raced for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import uvicorn

from modelport.core.replica import ReplicaLaunch
from modelport.worker.app import WorkerApp
from modelport.worker.sandbox import hide_directory


def main() -> None:
    launch = ReplicaLaunch.model_validate_json(sys.stdin.buffer.read())
    # Model code has no business with the supervisor's pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    logging.basicConfig(
        level=launch.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if launch.hidden_dir is not None:  # before any thread starts, and any model code runs
        hide_directory(launch.hidden_dir, readable=[launch.spec.artifact_dir])
    sock = socket.socket(fileno=launch.fd)
    config = uvicorn.Config(
        WorkerApp(launch.spec, launch.token),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=launch.log_level,
        timeout_graceful_shutdown=10,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
