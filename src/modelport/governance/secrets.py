"""Credentials of external model servers, kept as files only the server's user can read.

Values never enter the database, the API's answers or a log line: the API takes a value
and gives back names; the control plane reads a value only to hand it to the gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelport.core.errors import NotFound
from modelport.core.names import check_name

__all__ = ["SecretStore"]


class SecretStore:
    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, name: str, value: str) -> bool:
        """Store ``value`` under ``name``; True if it is new."""
        path = self._root / check_name("secret", name)
        created = not path.exists()
        staged = self._root / f".{name}.tmp"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        staged.replace(path)
        return created

    def get(self, name: str) -> str:
        path = self._root / check_name("secret", name)
        if not path.is_file():
            raise NotFound(
                f"secret '{name}' does not exist: create it with PUT /api/v1/secrets/{name}"
            )
        return path.read_text()

    def names(self) -> list[str]:
        return sorted(p.name for p in self._root.iterdir() if not p.name.startswith("."))

    def delete(self, name: str) -> None:
        path = self._root / check_name("secret", name)
        if not path.is_file():
            raise NotFound(f"secret '{name}' does not exist")
        path.unlink()
