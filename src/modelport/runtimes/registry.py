"""Built-in runtimes by name, imported lazily so heavy dependencies load only when used."""

from __future__ import annotations

import importlib

from modelport.core.errors import InvalidRequest
from modelport.runtimes.base import ModelRuntime

__all__ = [
    "EXTERNAL_SERVERS",
    "OPENAI_USAGE_RUNTIMES",
    "REMOTE_RUNTIMES",
    "RUNTIMES",
    "runtime_class",
]

RUNTIMES: dict[str, str] = {
    "onnx": "modelport.runtimes.onnx:OnnxRuntime",
    "sklearn": "modelport.runtimes.sklearn:SklearnRuntime",
    "llama-cpp": "modelport.runtimes.llama_cpp:LlamaCppRuntime",
    "sentence-transformers": "modelport.runtimes.sentence_transformers:SentenceTransformersRuntime",
    "pocketsphinx": "modelport.runtimes.pocketsphinx:PocketSphinxRuntime",
    "python": "modelport.runtimes.python:PythonRuntime",
    "vllm": "modelport.runtimes.vllm:VllmRuntime",
    "openai-upstream": "modelport.runtimes.remote:OpenAIUpstreamRuntime",
    "v2-upstream": "modelport.runtimes.remote:V2UpstreamRuntime",
}


# Runtimes whose replica is a server of its own (replica_command), not a Modelport worker.
# Named here so that the supervisor imports no runtime module just to find out.
EXTERNAL_SERVERS = frozenset({"vllm"})
# Runtimes that are a URL: no artifact, no replica; the gateway forwards to the URL.
REMOTE_RUNTIMES = frozenset({"openai-upstream", "v2-upstream"})
# Runtimes whose servers report units as OpenAI ``usage`` in their answers, not in the
# ``x-modelport-units`` header of Modelport's workers.
OPENAI_USAGE_RUNTIMES = frozenset({"vllm", "openai-upstream"})


def runtime_class(name: str) -> type[ModelRuntime]:
    """The runtime class registered under ``name``."""
    try:
        target = RUNTIMES[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown runtime {name!r}: choose one of {', '.join(sorted(RUNTIMES))}",
            field="runtime",
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidRequest(
            f"runtime {name!r} is not installed ({exc.name} is missing): "
            f"pip install 'modelport[{name}]'",
            field="runtime",
        ) from exc
    cls: type[ModelRuntime] = getattr(module, class_name)
    return cls
