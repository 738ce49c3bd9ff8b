"""One replica: loads one runtime and serves it over the Open Inference Protocol (V2)."""

from modelport.worker.app import WorkerApp

__all__ = ["WorkerApp"]
