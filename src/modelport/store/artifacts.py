"""Content-addressed artifact store: ``<root>/sha256/<hex>/`` holds one immutable artifact.

Artifacts enter through a staging directory and are renamed into place only once their
digest is known, so a failed upload never leaves a half-written artifact behind.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelport.core.digest import check_digest, digest_tree
from modelport.core.errors import InvalidRequest, NotFound

__all__ = ["Artifact", "ArtifactStore"]


@dataclass(frozen=True, slots=True)
class Artifact:
    digest: str
    path: Path
    size_bytes: int
    files: int
    created: bool  # False when identical bytes were already in the store


def _safe_filename(name: str) -> str:
    clean = PurePosixPath(name.replace("\\", "/")).name
    if clean in ("", ".", ".."):
        raise InvalidRequest(f"invalid artifact file name {name!r}", field="filename")
    return clean


class ArtifactStore:
    """Stores files and directory trees by their sha256 digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "sha256"
        self._staging = root / "staging"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)

    def ingest(self, source: Path) -> Artifact:
        """Copy a file or directory from the local filesystem into the store."""
        if not source.exists():
            raise InvalidRequest(
                f"artifact path {str(source)!r} does not exist: give the path of a model file "
                "or directory",
                field="path",
            )
        with self._stage() as staging:
            if source.is_dir():
                shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=True)
            else:
                shutil.copy2(source, staging / source.name)
            return self._commit(staging)

    def ingest_upload(self, upload: Path, *, filename: str, archive: bool) -> Artifact:
        """Take an uploaded file (consumed) or a tar archive of a directory into the store."""
        try:
            with self._stage() as staging:
                if archive:
                    self._extract(upload, staging)
                else:
                    shutil.move(upload, staging / _safe_filename(filename))
                return self._commit(staging)
        finally:
            upload.unlink(missing_ok=True)

    def upload_file(self) -> Path:
        """A fresh temporary path in the store's volume for an upload to be written to."""
        return self._staging / f"upload-{uuid.uuid4().hex}"

    def path(self, digest: str) -> Path:
        """Where an artifact lives. Refuses digests that are malformed or unknown."""
        path = self._objects / check_digest(digest).removeprefix("sha256:")
        if not path.is_dir():
            raise NotFound(f"artifact {digest} is not in the store: upload it first")
        return path

    def discard(self, digest: str) -> None:
        """Remove an artifact; only for one just ingested that nothing refers to."""
        shutil.rmtree(self.path(digest), ignore_errors=True)

    def exists(self, digest: str) -> bool:
        try:
            self.path(digest)
        except NotFound:
            return False
        return True

    @contextmanager
    def _stage(self) -> Iterator[Path]:
        staging = self._staging / uuid.uuid4().hex
        staging.mkdir()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, staging: Path) -> Artifact:
        files = [p for p in staging.rglob("*") if p.is_file() or p.is_symlink()]
        if not files:
            raise InvalidRequest("artifact is empty: it must hold at least one file")
        digest = digest_tree(staging)  # also refuses symbolic links
        final = self._objects / digest.removeprefix("sha256:")
        created = not final.exists()
        if created:
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists():  # a concurrent upload of the same bytes won the race
                    raise
                created = False
        return Artifact(
            digest=digest,
            path=final,
            size_bytes=sum(p.stat().st_size for p in final.rglob("*") if p.is_file()),
            files=len(files),
            created=created,
        )

    @staticmethod
    def _extract(archive: Path, target: Path) -> None:
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = PurePosixPath(member.name).parts
                    if member.name.startswith(("/", "\\")) or ".." in parts:
                        raise InvalidRequest(
                            f"archive member {member.name!r} escapes the artifact directory"
                        )
                    if not (member.isfile() or member.isdir()):
                        raise InvalidRequest(
                            f"archive member {member.name!r} is not a regular file or directory"
                        )
                tar.extractall(target, filter="data")
        except tarfile.TarError as exc:
            raise InvalidRequest(f"artifact upload is not a valid tar archive: {exc}") from exc
