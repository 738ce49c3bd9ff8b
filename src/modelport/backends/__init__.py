"""Where replicas run. One interface (``Backend``); the local supervisor is the built-in."""

from modelport.backends.base import Backend, ReplicaStatus
from modelport.backends.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "ReplicaStatus"]
