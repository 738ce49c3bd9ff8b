"""``/api/v1/artifacts``: upload a model file, or a tar of a directory, into the store."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from modelport.control.deps import ActorDep, PlaneDep
from modelport.control.schemas import ArtifactPublic
from modelport.core.errors import InvalidRequest, PayloadTooLarge

router = APIRouter(prefix="/artifacts", tags=["artifacts"])

_FLUSH_BYTES = 1024 * 1024


@router.post("", status_code=201)
async def upload_artifact(
    request: Request, plane: PlaneDep, actor: ActorDep, filename: str, archive: bool = False
) -> ArtifactPublic:
    """Body: the raw file bytes, or (``archive=true``) a tar of a directory."""
    limit = plane.settings.max_artifact_bytes
    upload = plane.artifacts.upload_file()
    size = 0
    pending = bytearray()
    try:
        with upload.open("wb") as handle:
            # File writes block: they go to a thread, a MiB at a time, never on the loop
            # that the gateway shares.
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"artifact exceeds {limit} bytes: raise MODELPORT_MAX_ARTIFACT_BYTES"
                    )
                pending += chunk
                if len(pending) >= _FLUSH_BYTES:
                    await asyncio.to_thread(handle.write, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(handle.write, bytes(pending))
        if size == 0:
            raise InvalidRequest("artifact upload is empty")
    except BaseException:
        upload.unlink(missing_ok=True)
        raise

    def ingest() -> ArtifactPublic:
        artifact = plane.artifacts.ingest_upload(upload, filename=filename, archive=archive)
        public = ArtifactPublic(
            digest=artifact.digest, size_bytes=artifact.size_bytes, files=artifact.files
        )
        plane.audit.change(
            request.scope,
            actor,
            action="artifacts.upload",
            target=f"artifact:{artifact.digest}",
            after=public.model_dump(mode="json"),
            details={"filename": filename[:200]},
        )
        return public

    return await asyncio.to_thread(ingest)
