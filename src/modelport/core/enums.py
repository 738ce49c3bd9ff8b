"""Closed sets of values used across layers."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EndpointStatus", "ReplicaState", "RolloutState", "Task"]


class Task(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    ASR = "asr"
    VISION = "vision"
    TABULAR = "tabular"
    CUSTOM = "custom"


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class EndpointStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"


class RolloutState(StrEnum):
    """``pending -> progressing <-> paused -> promoted | rolled_back | aborted``."""

    PENDING = "pending"  # the new revision is starting
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in (RolloutState.PENDING, RolloutState.PROGRESSING, RolloutState.PAUSED)
