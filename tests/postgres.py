"""A throwaway PostgreSQL server for tests: its own data directory, loopback, trust auth.

``.ci/run`` installs Debian's ``postgresql`` package if it is missing. PostgreSQL refuses to
run as root, so when the tests run as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def _bindir() -> Path:
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent  # Debian links some tools into /usr/local/bin
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(candidates[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL and yield a SQLAlchemy URL to a fresh database on it."""
    bindir = _bindir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    log = data / "server.log"
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data / "db"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data / "db"),
                "-l",
                str(log),
                "-w",
                "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def new_database(server_url: str, prefix: str) -> str:
    """Create an empty database named ``prefix_<random>`` on the server of ``server_url``
    (a ``postgres_url``) and return its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name
