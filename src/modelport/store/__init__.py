"""Persistent state: SQL tables, migrations and the content-addressed artifact store."""

# Every table module, so that the ORM knows every table wherever the store is used.
from modelport.store import (  # noqa: F401
    audit_tables,
    budget_tables,
    environment_tables,
    identity_tables,
    limit_tables,
    planning_tables,
    policy_tables,
)
from modelport.store.artifacts import Artifact, ArtifactStore
from modelport.store.db import Database

__all__ = ["Artifact", "ArtifactStore", "Database"]
