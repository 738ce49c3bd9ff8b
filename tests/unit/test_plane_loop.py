"""``ControlPlane.on_loop``: how route threads read the state the event loop owns."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelport.backends import LocalBackend
from modelport.control import ControlPlane
from modelport.core.settings import Settings
from modelport.governance import SecretStore
from modelport.observability import RecentUsage
from modelport.store import ArtifactStore, Database


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = Settings(home=tmp_path)
    db = Database(settings.resolved_database_url)
    await asyncio.to_thread(db.migrate)
    plane = ControlPlane(
        settings=settings,
        db=db,
        artifacts=ArtifactStore(settings.artifacts_dir),
        backend=LocalBackend(logs_dir=tmp_path / "logs"),
        admin_token="admin",
        publish_routes=lambda _: None,
        publish_keys=lambda _: None,
        usage=RecentUsage(),
        secrets=SecretStore(tmp_path / "secrets"),
    )
    await plane.start()
    try:
        yield plane
    finally:
        await plane.close()
        db.close()


async def test_a_thread_reads_on_the_loop(plane: ControlPlane) -> None:
    loop_thread = threading.get_ident()
    assert await asyncio.to_thread(plane.on_loop, threading.get_ident) == loop_thread


async def test_on_the_loop_itself_the_read_runs_at_once(plane: ControlPlane) -> None:
    assert plane.on_loop(lambda: 7) == 7  # waiting on itself would deadlock


async def test_a_failing_read_raises_in_the_thread(plane: ControlPlane) -> None:
    def missing() -> object:
        return {}["nope"]

    with pytest.raises(KeyError):
        await asyncio.to_thread(plane.on_loop, missing)


async def test_after_close_reads_run_where_they_are(plane: ControlPlane) -> None:
    await plane.close()
    caller = await asyncio.to_thread(
        lambda: (threading.get_ident(), plane.on_loop(threading.get_ident))
    )
    assert caller[0] == caller[1]
