"""Run a replica of an isolated environment under its limits: memory, CPUs, and no network.

The worker applies them to itself at start, before it loads the model and before any thread
starts (a new user namespace needs a single-threaded process), so the model's code runs
under them from its first line:

- memory: ``RLIMIT_AS`` bounds the address space; an allocation past it fails inside the
  replica (``MemoryError``) instead of pushing the machine into swap or the OOM killer.
  Address space counts what is reserved, not only what is touched: leave headroom.
- CPUs: ``sched_setaffinity`` to the first N CPUs the process may use.
- network: ``unshare(CLONE_NEWNET)`` moves the process into a network namespace of its own,
  with only a loopback interface that is down: every outbound connection fails, to the
  internet, the host and 127.0.0.1 alike. The listening socket the supervisor passed by fd
  stays in the host's namespace, so the gateway still reaches the replica, and only it.
  Without ``CAP_SYS_ADMIN`` (not root) a user namespace is created with it where the kernel
  allows unprivileged ones.

Where the operating system refuses, the replica starts anyway and says why (a warning in
its log, and :func:`apply_isolation`'s return value): refusing to serve would turn a missing
kernel feature into an outage, and the supervisor reports the replica as not isolated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource

from modelport.core.replica import ReplicaIsolation

__all__ = ["apply_isolation"]

log = logging.getLogger("modelport.worker.isolation")

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000


def apply_isolation(isolation: ReplicaIsolation) -> list[str]:
    """Apply ``isolation`` to this process; what could not be applied (empty: everything),
    each also logged as a warning."""
    problems = []
    if isolation.memory_mb is not None:
        limit = isolation.memory_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (OSError, ValueError) as exc:
            problems.append(f"memory not limited: {exc}")
    if isolation.cpus is not None:
        try:
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, allowed[: isolation.cpus])
        except OSError as exc:
            problems.append(f"CPUs not limited: {exc}")
    if isolation.network == "none":
        why = _unshare_network()
        if why is not None:
            problems.append(f"network not isolated: {why}")
    for problem in problems:
        log.warning("replica isolation incomplete: %s", problem)
    return problems


def _unshare_network() -> str | None:
    """Move this process into a network namespace of its own; why not, or None when done."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(_CLONE_NEWNET) == 0:
        return None
    first = os.strerror(ctypes.get_errno())
    # Unprivileged: a user namespace of our own grants CAP_SYS_ADMIN over the new network
    # namespace. Map our ids into it so that files keep their owners as we see them.
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return f"{first}; as an unprivileged user: {os.strerror(ctypes.get_errno())}"
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        # The network namespace is in place; only the ids show as unmapped (nobody).
        log.info("user namespace ids not mapped: %s", exc)
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)
