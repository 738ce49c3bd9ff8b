"""Content-addressed artifact store: ``<root>/sha256/<hex>/`` holds one immutable artifact.

Artifacts enter through a staging directory and are renamed into place only once their
digest is known, so a failed upload never leaves a half-written artifact behind.

What enters is bounded: an artifact copied from a path or unpacked from a tar archive may
hold at most ``max_bytes`` bytes in ``max_files`` files and directories, counted as they are
written (an archive's headers are not trusted), and only regular files and directories
enter. A path is read only if it lies under one of the directories the server allows
(``MODELPORT_ARTIFACT_ROOTS``); links are followed before that check, never after it.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from modelport.core.digest import check_digest, digest_tree
from modelport.core.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge

__all__ = ["Artifact", "ArtifactStore"]

_CHUNK = 1024 * 1024
# What reading a broken or hostile (compressed) archive raises: gzip and bz2 raise OSError.
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class _Unreadable(Exception):
    """Reading the source failed; writing the copy did not (that is the server's problem)."""


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


class _Budget:
    """Counts what one artifact writes, and stops it at the store's limits."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.bytes = 0
        self.files = 0

    def entry(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise PayloadTooLarge(
                f"artifact holds more than {self.max_files} files and directories: pack fewer "
                "files or raise MODELPORT_MAX_ARTIFACT_FILES"
            )

    def copy(self, source: IO[bytes], target: IO[bytes]) -> None:
        while chunk := _read(source):
            self.bytes += len(chunk)
            if self.bytes > self.max_bytes:
                raise PayloadTooLarge(
                    f"artifact holds more than {self.max_bytes} bytes once unpacked: raise "
                    "MODELPORT_MAX_ARTIFACT_BYTES"
                )
            target.write(chunk)


class ArtifactStore:
    """Stores files and directory trees by their sha256 digest.

    ``readable`` lists the directories that ``ingest`` may copy from and ``unreadable`` the
    ones inside them it may not (the server's own state); of the two, the deepest directory
    that holds a path decides. ``readable=None`` allows every path (for tools and tests).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 4 * 1024 * 1024 * 1024,
        max_files: int = 10_000,
        readable: Iterable[Path] | None = None,
        unreadable: Iterable[Path] = (),
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._readable = None if readable is None else tuple(p.resolve() for p in readable)
        self._rules = [(p, True) for p in self._readable or ()]
        self._rules += [(p.resolve(), False) for p in unreadable]
        self._objects = root / "sha256"
        self._staging = root / "staging"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)

    def ingest(self, source: Path, *, trusted: bool = False) -> Artifact:
        """Copy a file or directory from the local filesystem into the store.

        ``trusted`` skips the check of ``readable`` roots, for the server's own files (the
        demo's, wherever their package is installed); the limits still apply.
        """
        resolved = self._readable_path(source, trusted=trusted)
        with self._stage() as staging:
            budget = self._budget()
            try:
                if resolved.is_dir():
                    self._copy_tree(resolved, staging, budget)
                else:
                    name = source.name if source.name not in ("", ".", "..") else resolved.name
                    self._copy_file(resolved, staging / name, budget, str(source))
            except _Unreadable as exc:
                raise InvalidRequest(
                    f"artifact path {str(source)!r} could not be read: {exc.__cause__}",
                    field="artifact_path",
                ) from None
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

    # -- reading a local path ---------------------------------------------------------------

    def _readable_path(self, source: Path, *, trusted: bool) -> Path:
        """``source`` with its links resolved, if it exists and the store may read it."""
        try:
            resolved = source.expanduser().resolve(strict=True)
        except ValueError:  # a NUL character, or text the filesystem cannot encode
            raise InvalidRequest(
                f"artifact path {str(source)!r} is not a valid path", field="artifact_path"
            ) from None
        except (OSError, RuntimeError):  # missing, a dangling link or a loop of links
            raise InvalidRequest(
                f"artifact path {str(source)!r} does not exist: give the path of a model file "
                "or directory",
                field="artifact_path",
            ) from None
        if self._readable is not None and not trusted and not self._allowed(resolved):
            roots = ", ".join(str(p) for p in self._readable) or "none"
            raise Forbidden(
                f"artifact path {str(source)!r} is outside the directories the server may read "
                f"artifacts from ({roots}; set MODELPORT_ARTIFACT_ROOTS): upload the file "
                "with POST /api/v1/artifacts instead",
                field="artifact_path",
            )
        mode = resolved.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InvalidRequest(_special(str(source)), field="artifact_path")
        return resolved

    def _allowed(self, path: Path) -> bool:
        deepest: tuple[int, bool] = (-1, False)
        for directory, allowed in self._rules:
            if (path == directory or directory in path.parents) and len(directory.parts) > deepest[
                0
            ]:
                deepest = (len(directory.parts), allowed)
        return deepest[1]

    def _budget(self) -> _Budget:
        return _Budget(self.max_bytes, self.max_files)

    @staticmethod
    def _copy_file(source: Path, target: Path, budget: _Budget, shown: str) -> None:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it. The
        # check is on the open descriptor, so a file swapped for a FIFO after lstat is caught.
        budget.entry()
        try:
            descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:  # unreadable, or a link that appeared after the check
            raise _Unreadable from exc
        with open(descriptor, "rb") as reader:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise InvalidRequest(_special(shown), field="artifact_path")
            with target.open("xb") as writer:
                budget.copy(reader, writer)
        target.chmod(stat.S_IMODE(status.st_mode) | stat.S_IRUSR | stat.S_IWUSR)

    def _copy_tree(self, source: Path, target: Path, budget: _Budget) -> None:
        pending = [(source, target)]  # a loop, not recursion: trees can be deep
        while pending:
            directory, into = pending.pop()
            try:
                listing = os.scandir(directory)
            except OSError as exc:
                raise _Unreadable from exc
            with listing as entries:
                for entry in entries:
                    shown = str(Path(entry.path).relative_to(source))
                    if entry.is_symlink():
                        raise InvalidRequest(
                            f"artifact contains a symbolic link: {shown}", field="artifact_path"
                        )
                    if entry.is_dir(follow_symlinks=False):
                        budget.entry()
                        (into / entry.name).mkdir()
                        pending.append((Path(entry.path), into / entry.name))
                    elif entry.is_file(follow_symlinks=False):
                        self._copy_file(Path(entry.path), into / entry.name, budget, shown)
                    else:
                        raise InvalidRequest(_special(shown), field="artifact_path")

    # -- unpacking an upload -----------------------------------------------------------------

    def _extract(self, archive: Path, target: Path) -> None:
        budget = self._budget()
        try:
            with _open_tar(archive) as tar:
                members = iter(tar)  # one header at a time: a huge listing stops at the limit
                while (member := _read_next(members)) is not None:
                    self._extract_member(tar, member, target, budget)
        except tarfile.TarError as exc:
            raise InvalidRequest(f"artifact upload is not a valid tar archive: {exc}") from exc
        except _Unreadable as exc:
            raise InvalidRequest(
                f"artifact upload is not a valid tar archive: {exc.__cause__}"
            ) from exc

    @staticmethod
    def _extract_member(
        tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, budget: _Budget
    ) -> None:
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts:
            raise InvalidRequest(f"archive member {member.name!r} escapes the artifact directory")
        if not (member.isfile() or member.isdir()):
            raise InvalidRequest(
                f"archive member {member.name!r} is not a regular file or directory"
            )
        budget.entry()
        path = target.joinpath(*parts)
        try:
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                return
            if not parts:
                raise InvalidRequest(f"archive member {member.name!r} has no file name")
            path.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has a reader
            with source, path.open("wb") as writer:
                budget.copy(source, writer)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise InvalidRequest(
                f"archive member {member.name!r} clashes with another member of that name"
            ) from None
        path.chmod(0o755 if member.mode & stat.S_IXUSR else 0o644)

    # -- staging and commit ------------------------------------------------------------------

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


def _read(source: IO[bytes]) -> bytes:
    try:
        return source.read(_CHUNK)
    except _READ_ERRORS as exc:
        raise _Unreadable from exc


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive)  # reads the first header, of any compression
    except _READ_ERRORS as exc:
        raise _Unreadable from exc


def _read_next(members: Iterator[tarfile.TarInfo]) -> tarfile.TarInfo | None:
    try:
        return next(members, None)
    except _READ_ERRORS as exc:
        raise _Unreadable from exc


def _special(shown: str) -> str:
    return (
        f"artifact path {shown!r} is not a regular file or directory (a FIFO, socket or device "
        "cannot be an artifact)"
    )
