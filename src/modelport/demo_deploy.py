"""The demo models ``modelport serve --demo`` registers and deploys: each model once per home,
its champion version routed, its candidate versions registered beside it (for ``modelport
compare``). Nothing is downloaded: ``modelport.demo`` builds or finds each artifact."""

from __future__ import annotations

import logging

from modelport.control import ControlPlane, registry
from modelport.control import endpoints as endpoint_service
from modelport.control.plane import Deployment
from modelport.control.schemas import VersionCreate, VersionPublic
from modelport.core.settings import Settings
from modelport.demo import DEMOS, DemoArtifact, DemoModel

__all__ = ["register_demos"]

log = logging.getLogger("modelport.server")


def register_demos(plane: ControlPlane, settings: Settings) -> list[tuple[str, Deployment]]:
    """Build or find each demo's artifact; register each model once per home and prepare its
    endpoint (the caller deploys what is returned)."""
    out = settings.home / "demo"
    out.mkdir(parents=True, exist_ok=True)
    created = []
    wanted = {n.strip() for n in settings.demo_models.split(",") if n.strip()}
    for demo in DEMOS:
        if wanted and demo.name not in wanted:
            continue
        marker = out / f".deployed-{demo.name}"
        if marker.exists():
            continue
        artifact = demo.locate(out)
        if artifact is None:
            continue
        with plane.db.session() as session:
            if demo.name in {m.name for m in registry.list_models(session)}:
                log.info("demo %s: a model of that name exists; left alone", demo.name)
                marker.write_text("a model of this name existed; not deployed\n")
                continue
        with plane.db.session() as session:
            registry.create_model(
                session,
                name=demo.name,
                task=demo.task,
                description=demo.description,
                owner="demo",
            )
        version = _register_version(plane, demo, artifact)
        for locate in demo.candidates:  # versions 2, 3, ...: registered, not routed
            candidate = locate(out)
            if candidate is not None:
                _register_version(plane, demo, candidate)
        with plane.db.session() as session:
            registry.set_alias(session, model=demo.name, alias="champion", version=version.version)
            row = endpoint_service.create_endpoint(
                session, name=demo.name, model=f"{demo.name}@champion", replicas=1
            )
            created.append((row.name, plane.prepare(row, row.revisions[0])))
        marker.write_text("registered and deployed; delete this file to do it again\n")
    return created


def _register_version(
    plane: ControlPlane, demo: DemoModel, artifact: DemoArtifact
) -> VersionPublic:
    # The demo's own files, wherever their package is installed: not a path a user
    # gave, so not held to MODELPORT_ARTIFACT_ROOTS.
    stored = plane.artifacts.ingest(artifact.path, trusted=True)
    reference = (
        plane.artifacts.ingest(artifact.reference, trusted=True) if artifact.reference else None
    )
    return plane.register_version(
        demo.name,
        VersionCreate(
            runtime=demo.runtime,
            artifact_digest=stored.digest,
            metrics=artifact.metrics,
            runtime_options=demo.options,
            reference_digest=reference.digest if reference else None,
            tags={"source": "modelport demo"},
        ),
        created_by="demo",
    )
