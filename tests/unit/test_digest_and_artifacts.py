from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from modelport.core.digest import digest_tree
from modelport.core.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from modelport.store import ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_single_file_digest_is_plain_sha256(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"weights")
    assert digest_tree(path) == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_tree_digest_covers_names_and_contents(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"model.bin": b"1", "conf/x.json": b"{}"})
    b = _tree(tmp_path / "b", {"conf/x.json": b"{}", "model.bin": b"1"})
    renamed = _tree(tmp_path / "c", {"model2.bin": b"1", "conf/x.json": b"{}"})
    changed = _tree(tmp_path / "d", {"model.bin": b"2", "conf/x.json": b"{}"})
    assert digest_tree(a) == digest_tree(b)
    assert digest_tree(a) != digest_tree(renamed)
    assert digest_tree(a) != digest_tree(changed)


def test_ingest_is_content_addressed_and_idempotent(store: ArtifactStore, tmp_path: Path) -> None:
    source = _tree(tmp_path / "model", {"model.joblib": b"abc", "README.md": b"hi"})
    first = store.ingest(source)
    second = store.ingest(source)
    assert first.created and not second.created
    assert first.digest == second.digest == digest_tree(first.path)
    assert first.files == 2 and first.size_bytes == 5
    assert store.path(first.digest) == first.path
    assert (first.path / "README.md").read_bytes() == b"hi"


def test_ingest_refuses_missing_and_empty(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        store.ingest(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match="empty"):
        store.ingest(tmp_path / "empty")
    assert list((store.root / "sha256").iterdir()) == []
    assert list((store.root / "staging").iterdir()) == []


def test_ingest_refuses_symlinks(store: ArtifactStore, tmp_path: Path) -> None:
    source = _tree(tmp_path / "model", {"model.onnx": b"x"})
    (source / "link").symlink_to("/etc/passwd")
    with pytest.raises(InvalidRequest, match="symbolic link"):
        store.ingest(source)
    assert list((store.root / "sha256").iterdir()) == []


def _tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("../up.txt"), "escapes"),
        (tarfile.TarInfo("/abs.txt"), "escapes"),
        (tarfile.TarInfo("a/../../b.txt"), "escapes"),
    ],
)
def test_upload_refuses_escaping_members(
    store: ArtifactStore, tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    upload = store.upload_file()
    upload.write_bytes(_tar([member]))
    with pytest.raises(InvalidRequest, match=message):
        store.ingest_upload(upload, filename="x", archive=True)
    assert not upload.exists()
    assert list((store.root / "staging").iterdir()) == []
    assert list((store.root / "sha256").iterdir()) == []


def test_upload_refuses_links_and_garbage(store: ArtifactStore) -> None:
    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    upload = store.upload_file()
    upload.write_bytes(_tar([link]))
    with pytest.raises(InvalidRequest, match="not a regular file"):
        store.ingest_upload(upload, filename="x", archive=True)
    upload = store.upload_file()
    upload.write_bytes(b"not a tar")
    with pytest.raises(InvalidRequest, match="not a valid tar"):
        store.ingest_upload(upload, filename="x", archive=True)


def test_upload_of_a_file_keeps_only_its_base_name(store: ArtifactStore) -> None:
    upload = store.upload_file()
    upload.write_bytes(b"onnx bytes")
    artifact = store.ingest_upload(upload, filename="../../evil/model.onnx", archive=False)
    assert [p.name for p in artifact.path.iterdir()] == ["model.onnx"]
    assert artifact.digest == "sha256:" + hashlib.sha256(b"onnx bytes").hexdigest()


def test_path_checks_the_digest(store: ArtifactStore) -> None:
    with pytest.raises(InvalidRequest, match="invalid artifact digest"):
        store.path("sha256:../../etc")
    with pytest.raises(NotFound, match="not in the store"):
        store.path("sha256:" + "a" * 64)


# -- bounded input: size, file count, special files, readable roots ---------------------------


def _nothing_left(store: ArtifactStore) -> bool:
    return not any((store.root / "staging").iterdir()) and not any(
        (store.root / "sha256").iterdir()
    )


def _upload(store: ArtifactStore, data: bytes) -> Path:
    upload = store.upload_file()
    upload.write_bytes(data)
    return upload


def _gzip_tar(files: dict[str, int]) -> bytes:
    """A .tar.gz of files of zeros: tiny packed, ``sum(files.values())`` bytes unpacked."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, size in files.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


def test_archive_that_unpacks_past_the_limit_is_refused_while_unpacking(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", max_bytes=1024 * 1024)
    bomb = _gzip_tar({"weights.bin": 64 * 1024 * 1024})
    assert len(bomb) < 100_000  # under 100 KB packed, 64 MB unpacked
    with pytest.raises(PayloadTooLarge) as info:
        store.ingest_upload(_upload(store, bomb), filename="x", archive=True)
    assert "more than 1048576 bytes once unpacked" in info.value.message
    assert "MODELPORT_MAX_ARTIFACT_BYTES" in info.value.message
    assert info.value.status == 413
    assert _nothing_left(store)


def test_archive_limit_counts_all_members_together(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", max_bytes=1000)
    fits = _gzip_tar({"a": 500, "b": 500})
    assert store.ingest_upload(_upload(store, fits), filename="x", archive=True).size_bytes == 1000
    with pytest.raises(PayloadTooLarge):
        store.ingest_upload(
            _upload(store, _gzip_tar({"a": 500, "b": 500, "c": 1})), filename="x", archive=True
        )


def test_archive_with_too_many_files_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", max_files=10)
    many = _gzip_tar({f"f{i}": 1 for i in range(11)})
    with pytest.raises(PayloadTooLarge) as info:
        store.ingest_upload(_upload(store, many), filename="x", archive=True)
    assert "more than 10 files and directories" in info.value.message
    assert "MODELPORT_MAX_ARTIFACT_FILES" in info.value.message
    assert _nothing_left(store)


@pytest.mark.parametrize(
    "data",
    [
        _gzip_tar({"model.bin": 10_000})[:-40],  # truncated: the gzip stream ends early
        _gzip_tar({"model.bin": 10_000})[:30] + b"\xff" * 200,  # corrupt deflate data
        b"BZh91AY&SY" + b"\x00" * 100,  # a bz2 header over garbage
    ],
)
def test_broken_compressed_archives_are_400(store: ArtifactStore, data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not a valid tar archive"):
        store.ingest_upload(_upload(store, data), filename="x", archive=True)
    assert _nothing_left(store)


def test_archive_members_that_clash_are_400(store: ArtifactStore) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a", "a/b"):  # "a" is a file, then a directory
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidRequest, match="clashes with another member"):
        store.ingest_upload(_upload(store, buffer.getvalue()), filename="x", archive=True)


def test_archive_keeps_directories_and_the_executable_bit(store: ArtifactStore) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("./pkg")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, mode in (("./pkg/run.sh", 0o755), ("./pkg/model.py", 0o600)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 2, mode
            tar.addfile(info, io.BytesIO(b"hi"))
    artifact = store.ingest_upload(_upload(store, buffer.getvalue()), filename="x", archive=True)
    assert artifact.files == 2
    assert (artifact.path / "pkg" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (artifact.path / "pkg" / "model.py").stat().st_mode & 0o777 == 0o644


def test_path_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", max_bytes=1024)
    big = _tree(tmp_path / "model", {"a.bin": bytes(600), "b.bin": bytes(600)})
    with pytest.raises(PayloadTooLarge, match="more than 1024 bytes"):
        store.ingest(big)
    assert _nothing_left(store)


def test_path_with_too_many_files_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", max_files=3)
    source = _tree(tmp_path / "model", {"a": b"1", "d/b": b"2", "d/c": b"3"})  # 4 with d/
    with pytest.raises(PayloadTooLarge, match="more than 3 files"):
        store.ingest(source)


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(
    store: ArtifactStore, tmp_path: Path
) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    with pytest.raises(InvalidRequest, match="not a regular file or directory") as info:
        store.ingest(fifo)
    assert info.value.details["field"] == "artifact_path"
    directory = _tree(tmp_path / "model", {"model.onnx": b"x"})
    os.mkfifo(directory / "pipe")
    with pytest.raises(InvalidRequest, match="'pipe' is not a regular file"):
        store.ingest(directory)
    assert _nothing_left(store)


@pytest.mark.timeout(20)
def test_devices_and_sockets_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    for device in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(InvalidRequest, match="not a regular file or directory"):
            store.ingest(Path(device))
    directory = _tree(tmp_path / "model", {"model.onnx": b"x"})
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(directory / "control.sock"))
        with pytest.raises(InvalidRequest, match=r"'control\.sock' is not a regular file"):
            store.ingest(directory)
    assert _nothing_left(store)


@pytest.fixture
def rooted(tmp_path: Path) -> tuple[ArtifactStore, Path, Path]:
    """A store that may read ``allowed/`` and ``home/demo/``, but not the rest of ``home/``."""
    allowed, home = tmp_path / "allowed", tmp_path / "allowed" / "home"
    (home / "demo").mkdir(parents=True)
    store = ArtifactStore(
        tmp_path / "artifacts", readable=(allowed, home / "demo"), unreadable=(home,)
    )
    return store, allowed, home


def test_paths_outside_the_roots_are_forbidden(
    rooted: tuple[ArtifactStore, Path, Path], tmp_path: Path
) -> None:
    store, allowed, home = rooted
    assert store.ingest(_tree(allowed / "model", {"m.onnx": b"1"})).created
    assert store.ingest(_tree(home / "demo" / "x", {"m.onnx": b"2"})).created
    outside = _tree(tmp_path / "elsewhere", {"m.onnx": b"3"})
    secret = home / "admin-token"
    secret.write_text("token")
    for path in (outside, outside / "m.onnx", secret, allowed / ".." / "elsewhere", Path("/etc")):
        with pytest.raises(Forbidden) as info:
            store.ingest(path)
        assert "MODELPORT_ARTIFACT_ROOTS" in info.value.message
        assert "POST /api/v1/artifacts" in info.value.message
        assert info.value.details["field"] == "artifact_path"


def test_links_are_judged_by_where_they_point(
    rooted: tuple[ArtifactStore, Path, Path], tmp_path: Path
) -> None:
    store, allowed, _ = rooted
    outside = _tree(tmp_path / "elsewhere", {"m.onnx": b"3"})
    (allowed / "to-outside").symlink_to(outside / "m.onnx")
    (allowed / "to-dir-outside").symlink_to(outside)
    for link in ("to-outside", "to-dir-outside"):
        with pytest.raises(Forbidden):
            store.ingest(allowed / link)
    inside = _tree(allowed / "model", {"model.onnx": b"4"})
    (tmp_path / "to-inside").symlink_to(inside / "model.onnx")
    artifact = store.ingest(tmp_path / "to-inside")
    assert [p.name for p in artifact.path.iterdir()] == ["to-inside"]  # the name asked for
    with pytest.raises(InvalidRequest, match="does not exist"):
        store.ingest(allowed / "dangling")


def test_no_roots_means_no_path_is_readable(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", readable=())
    with pytest.raises(Forbidden, match=r"\(none; set MODELPORT_ARTIFACT_ROOTS\)"):
        store.ingest(_tree(tmp_path / "model", {"m.onnx": b"1"}))


@pytest.mark.parametrize("path", ["model\0.onnx", "model\ud800.onnx"])
def test_paths_no_filesystem_can_hold_are_400(store: ArtifactStore, path: str) -> None:
    # Found by Schemathesis: a NUL or a lone surrogate made Path.resolve raise ValueError.
    with pytest.raises(InvalidRequest, match="is not a valid path"):
        store.ingest(Path(path))


def test_trusted_ingest_skips_the_roots_but_not_the_limits(tmp_path: Path) -> None:
    # The server's own demo files live wherever their package is installed.
    store = ArtifactStore(tmp_path / "artifacts", readable=(), max_bytes=1024)
    source = _tree(tmp_path / "package", {"model.gguf": b"weights"})
    with pytest.raises(Forbidden):
        store.ingest(source)
    assert store.ingest(source, trusted=True).created
    (source / "big.bin").write_bytes(bytes(2048))
    with pytest.raises(PayloadTooLarge):
        store.ingest(source, trusted=True)
