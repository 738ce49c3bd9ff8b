"""Content digests of artifacts, shared by the store (on ingest) and workers (before load).

A single file's digest is its plain sha256, so ``sha256sum model.onnx`` verifies it. A
directory with more than one file hashes the sorted list of ``relative/path\\0<file sha256>``
lines, so renaming, adding or changing any file changes the digest.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from modelport.core.errors import InvalidRequest

__all__ = ["DIGEST_PATTERN", "check_digest", "digest_file", "digest_tree"]

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


def check_digest(digest: str) -> str:
    if not DIGEST_PATTERN.match(digest):
        raise InvalidRequest(
            f"invalid artifact digest {digest!r}: expected 'sha256:' and 64 lowercase hex digits",
            field="artifact_digest",
        )
    return digest


def digest_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise InvalidRequest(f"artifact contains a symbolic link: {path.relative_to(root)}")
        if path.is_file():
            files.append(path)
    return files


def digest_tree(path: Path) -> str:
    """Digest of a file, or of a directory tree (see module docstring)."""
    if path.is_file():
        return "sha256:" + digest_file(path)
    files = _files(path)
    if len(files) == 1 and files[0].parent == path:
        return "sha256:" + digest_file(files[0])
    sha = hashlib.sha256()
    for file in files:
        sha.update(f"{file.relative_to(path).as_posix()}\0{digest_file(file)}\n".encode())
    return "sha256:" + sha.hexdigest()
