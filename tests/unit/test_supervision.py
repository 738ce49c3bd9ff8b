"""The supervisor's own logic, on real (failing or busy) processes, without a server."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from modelport.backends import LocalBackend
from modelport.backends.local import _cpu_seconds
from modelport.core.enums import ReplicaState
from modelport.core.replica import ReplicaSpec


def _spec(tmp_path: Path, endpoint: str) -> ReplicaSpec:
    return ReplicaSpec(
        endpoint=endpoint,
        model="m",
        version=1,
        runtime="vllm",
        task="chat",
        artifact_dir=tmp_path,
        artifact_digest="sha256:" + "a" * 64,
    )


async def test_a_replica_that_cannot_be_spawned_says_why_and_keeps_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'vllm' program anywhere on it
    backend = LocalBackend(logs_dir=tmp_path / "logs", health_interval_s=0.02)
    await backend.start()
    try:
        await backend.deploy(_spec(tmp_path, "gpu-chat"), 1, b"token")
        deadline = time.monotonic() + 10
        while backend.status("gpu-chat@r1")[0].restarts < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        replica = backend.status("gpu-chat@r1")[0]
        assert replica.restarts >= 2  # retried, with backoff
        assert replica.state == ReplicaState.RESTARTING
        assert replica.pid is None
        assert replica.last_error is not None
        assert "could not start" in replica.last_error
        assert "cannot run 'vllm'" in replica.last_error
        assert backend.ready("gpu-chat@r1") == ()
    finally:
        await backend.close()
    assert backend.status("gpu-chat@r1") == []


def test_cpu_time_tells_a_busy_process_from_an_idle_one() -> None:
    before = _cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = _cpu_seconds(os.getpid())
    assert after is not None and after > before
    assert _cpu_seconds(2**22 + 12345) is None  # no such process
