"""Hide the server's home from a replica's model code, with Linux Landlock where the kernel
has it.

A replica runs code that teams register (a custom class, a pickle). It runs as the server's
own Unix user, so file permissions cannot keep it from ``$MODELPORT_HOME``: the admin token,
the secrets of external endpoints, the database, other endpoints' artifacts and logs.
Landlock (Linux 5.13+) lets an unprivileged process give up access for itself and its
children. Before it loads anything, the worker keeps read and write access to everything
except the home directory, and read-only access to its own artifact there. Landlock also
stops it from reading ``/proc/<pid>/environ`` or memory of processes outside its sandbox,
the server's included.

Landlock grants by allowlist, so "everything but the home" means a rule for every entry
beside each directory on the way down to it. An entry created there later (a new file
directly in ``/tmp`` when the home lies under ``/tmp``) is out of reach: keep the home out
of busy shared directories, or turn this off with ``MODELPORT_REPLICA_SANDBOX=false``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["hide_directory"]

log = logging.getLogger("modelport.worker.sandbox")

# System call numbers are the same on every architecture (the generic table).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 1, 1 << 2, 1 << 3
_REMOVE_AND_MAKE = sum(1 << bit for bit in range(4, 13))  # remove dir/file, make anything
_REFER, _TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3
_FILE_RIGHTS = _READ_FILE | _WRITE_FILE | _TRUNCATE  # what a rule on a non-directory may hold
_READ = _READ_FILE | _READ_DIR


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def hide_directory(hidden: Path, readable: list[Path]) -> bool:
    """Give up access to ``hidden`` except reading ``readable`` beneath it, for this process
    and its future children. Call it before any thread starts. False (with a warning) where
    the kernel cannot; the replica then runs as it would have without."""
    try:
        return _restrict(hidden.resolve(), [p.resolve() for p in readable])
    except OSError as exc:
        log.warning("replica not sandboxed (%s): it can read %s", exc, hidden)
        return False


def _restrict(hidden: Path, readable: list[Path]) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)

    def call(*args: object) -> int:
        result: int = libc.syscall(*args)
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"landlock: {os.strerror(errno)}")
        return result

    abi = call(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    handled = _READ | _WRITE_FILE | _REMOVE_AND_MAKE
    handled |= (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)  # struct landlock_ruleset_attr, its ABI 1 part
    ruleset = call(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    try:
        for path, rights in _rules(hidden, readable, handled):
            _allow(call, ruleset, path, rights)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        call(_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    log.info("replica sandboxed: %s is out of its reach (landlock ABI %d)", hidden, abi)
    return True


def _rules(hidden: Path, readable: list[Path], handled: int) -> list[tuple[Path, int]]:
    rules: list[tuple[Path, int]] = []
    current = Path("/")
    for part in hidden.parts[1:]:
        with os.scandir(current) as entries:
            # A link needs no rule (its target has one), and one may lead back into the
            # hidden directory (pytest-current -> pytest-7).
            rules += [
                (Path(e.path), handled) for e in entries if e.name != part and not e.is_symlink()
            ]
        current = current / part
    # The worker's own code, should the interpreter live under the hidden directory.
    code = [Path(p).resolve() for p in sys.path if p and Path(p).exists()]
    readable = readable + [p for p in code if p.is_relative_to(hidden)]
    rules += [(path, _READ & handled) for path in readable]
    return rules


def _allow(call: Callable[..., int], ruleset: int, path: Path, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # gone since: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        if rights:
            rule = _PathBeneath(rights, fd)
            call(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)
