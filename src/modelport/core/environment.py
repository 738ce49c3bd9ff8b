"""What a child process may see of the server's environment: only what it needs.

The server's environment holds its secrets (a database URL with its password, credentials of
cloud SDKs, whatever the operator exported). A replica, and the process that inspects an
artifact at registration, run model code that teams register, so they start from an empty
environment plus an allowlist, never from a copy of the server's.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["minimal_environment"]

# Names a process needs to run at all, find its interpreter's packages, write temporary
# files and format text.
_NAMES = frozenset(
    {
        "PATH",
        "SYSTEMROOT",  # Windows cannot start a Python without it
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "COVERAGE_PROCESS_START",  # coverage of replicas in the project's own test runs
        # Where ML libraries keep their caches, and whether they may go online for them.
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "SENTENCE_TRANSFORMERS_HOME",
        "TORCH_HOME",
        "XDG_CACHE_HOME",
        # Which accelerators this replica may use.
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
    }
)
# Locale categories and the thread pools of numeric libraries (a replica sharing a machine
# with others is often limited to a few threads this way). Limits and other settings reach
# a worker in its ReplicaSpec, not its environment.
_PREFIXES = (
    "LC_",
    "OMP_",
    "OPENBLAS_",
    "MKL_",
    "NUMEXPR_",
    "VECLIB_",
)


def minimal_environment(
    server: Mapping[str, str], *, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a replica: the allowlisted part of ``server``'s, plus ``extra``
    (what the replica's runtime declares it needs, such as an external server's API key)."""
    env = {
        name: value
        for name, value in server.items()
        if name in _NAMES or name.startswith(_PREFIXES)
    }
    env.update(extra or {})
    return env
