"""An isolated replica's limits, applied the way the worker applies them: in a fresh process,
before anything else runs. The process cannot connect out (not even to 127.0.0.1), yet its
listening socket, passed by fd as the supervisor passes it, still takes connections."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from modelport.backends.isolation import network_isolated
from modelport.core.replica import ReplicaIsolation, ReplicaSpec

_CHILD = textwrap.dedent(
    """
    import json, os, resource, socket, sys
    from modelport.core.replica import ReplicaIsolation
    from modelport.worker.isolation import apply_isolation

    isolation, target, fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    problems = apply_isolation(ReplicaIsolation.model_validate_json(isolation))
    try:
        socket.create_connection(("127.0.0.1", target), timeout=2).close()
        outbound = "connected"
    except OSError as exc:
        outbound = type(exc).__name__ + ": " + str(exc)
    print(json.dumps({
        "problems": problems,
        "outbound": outbound,
        "memory": resource.getrlimit(resource.RLIMIT_AS)[0],
        "cpus": len(os.sched_getaffinity(0)),
    }), flush=True)
    listener = socket.socket(fileno=fd)
    conn, _ = listener.accept()  # the "gateway" reaches it from the host's namespace
    conn.sendall(b"served")
    conn.close()
    """
)


def _run(isolation: ReplicaIsolation) -> tuple[dict[str, object], bytes]:
    target = socket.create_server(("127.0.0.1", 0))  # what the model would try to reach
    listener = socket.create_server(("127.0.0.1", 0))  # the replica's, made by the supervisor
    listener.set_inheritable(True)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            isolation.model_dump_json(),
            str(target.getsockname()[1]),
            str(listener.fileno()),
        ],
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline())
        with socket.create_connection(listener.getsockname(), timeout=5) as conn:
            served = conn.recv(16)
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        target.close()
        listener.close()
    return report, served


def test_the_isolation_field_is_optional_and_strict() -> None:
    spec = ReplicaSpec(
        endpoint="e", model="m", version=1, runtime="python", artifact_dir=".", artifact_digest=""
    )
    assert spec.isolation is None
    with pytest.raises(ValueError):
        ReplicaIsolation(memory_mb=1)
    with pytest.raises(ValueError):
        ReplicaIsolation.model_validate({"network": "none", "disk": 1})


def test_without_network_isolation_the_process_connects() -> None:
    report, served = _run(ReplicaIsolation(network="host"))
    assert report["outbound"] == "connected"
    assert report["problems"] == []
    assert served == b"served"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux")
def test_an_isolated_process_cannot_connect_out_but_still_serves() -> None:
    report, served = _run(ReplicaIsolation(memory_mb=1024, cpus=1, network="none"))
    if report["problems"]:  # the kernel refused: the replica runs, and says why
        assert all("not" in p for p in report["problems"])  # type: ignore[union-attr]
        pytest.skip(f"this kernel refuses: {report['problems']}")
    assert report["outbound"] != "connected", report
    assert report["memory"] == 1024 * 1024 * 1024
    assert report["cpus"] == 1
    assert served == b"served"


def test_network_isolated_compares_namespaces() -> None:
    assert network_isolated(os.getpid()) is False
    assert network_isolated(2**22 + 1) is None  # no such process
