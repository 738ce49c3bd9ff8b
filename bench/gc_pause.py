"""How long a full garbage collection stalls the server's event loop, with and without the
start-up objects frozen (what ``modelport serve`` does once it has started).

A full collection walks every tracked object; the server's are mostly what start-up loaded
(FastAPI, SQLAlchemy, pydantic models, migrations), which live for the whole process. Every
request in flight waits while it runs, so its pause is the gateway's worst latency. Starts
the server in process with a temporary home (no replicas), then measures both ways:

    .venv/bin/python bench/gc_pause.py
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import tempfile
import time
from pathlib import Path

from modelport.core.settings import Settings
from modelport.server import ModelportServer


def _pauses(rounds: int) -> list[float]:
    pauses = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        pauses.append((time.perf_counter() - started) * 1000)
    return pauses


async def main(rounds: int = 5) -> None:
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as home:
        server = ModelportServer(Settings(home=Path(home)))
        await server.startup()  # ends by freezing what start-up allocated
        try:
            gc.unfreeze()
            tracked = len(gc.get_objects())
            unfrozen = _pauses(rounds)
            gc.freeze()
            frozen = _pauses(rounds)
        finally:
            await server.shutdown()
    print(f"objects tracked after start-up: {tracked}")
    print(f"full collection, nothing frozen: median {statistics.median(unfrozen):7.2f} ms")
    print(f"full collection, start-up frozen: median {statistics.median(frozen):7.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
