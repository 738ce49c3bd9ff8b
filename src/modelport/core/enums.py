"""Closed sets of values used across layers."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EndpointStatus", "ReplicaState", "Task"]


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
