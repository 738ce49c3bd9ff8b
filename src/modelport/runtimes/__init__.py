"""Model runtimes: one plugin interface (``ModelRuntime``) and built-ins looked up by name."""

from modelport.runtimes.base import ModelRuntime, RuntimeSettings, find_model_file
from modelport.runtimes.registry import RUNTIMES, runtime_class

__all__ = ["RUNTIMES", "ModelRuntime", "RuntimeSettings", "find_model_file", "runtime_class"]
