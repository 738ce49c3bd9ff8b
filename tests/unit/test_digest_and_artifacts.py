from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from modelport.core.digest import digest_tree
from modelport.core.errors import InvalidRequest, NotFound
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
