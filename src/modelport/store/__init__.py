"""Persistent state: SQL tables, migrations and the content-addressed artifact store."""

from modelport.store.artifacts import Artifact, ArtifactStore
from modelport.store.db import Database

__all__ = ["Artifact", "ArtifactStore", "Database"]
