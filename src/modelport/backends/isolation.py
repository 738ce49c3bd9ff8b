"""What the supervisor can see of a replica's isolation from outside: whether the worker
really left the host's network namespace (the worker applies the limits to itself, see
``modelport.worker.isolation``; where the kernel refused, only its log says why)."""

from __future__ import annotations

import os

__all__ = ["network_isolated"]


def network_isolated(pid: int) -> bool | None:
    """Whether process ``pid`` runs in a network namespace other than this process's; None
    where /proc cannot tell (the process is gone, or /proc is not Linux's)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return None
