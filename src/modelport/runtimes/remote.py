"""External model servers as endpoints: vLLM, llama.cpp server, a hosted API (OpenAI wire
format), or Triton, MLServer, KServe (Open Inference Protocol V2), reached by URL.

No replica runs for them: the gateway forwards straight to the URL, rewriting the model name
and adding the credential, which is a secret's name here and its value only in the gateway.
Options: ``url`` (for ``openai-upstream`` the base ending in ``/v1``; for ``v2-upstream`` the
server root), ``model`` (the name the server knows; default: the endpoint's), ``credential``
(a secret's name, sent as ``Authorization: Bearer``). An OpenAI-compatible server is
metered with the ``usage`` it reports (``gateway/openai_usage.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature
from modelport.runtimes.base import ModelRuntime

__all__ = ["OpenAIUpstreamRuntime", "V2UpstreamRuntime", "check_remote_options"]


def check_remote_options(options: dict[str, Any]) -> None:
    url = options.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "an external endpoint needs the runtime option url='http(s)://host[:port]/...'",
            field="runtime_options",
        )
    for name in ("model", "credential"):
        if name in options and not isinstance(options[name], str):
            raise InvalidRequest(
                f"runtime option {name!r} must be a string", field="runtime_options"
            )


class _Remote(ModelRuntime):
    remote_protocol = "openai"

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        check_remote_options(options)
        return Signature()

    async def load(self) -> None:
        raise RuntimeError("external endpoints have no replica to load")


class OpenAIUpstreamRuntime(_Remote):
    remote_protocol = "openai"


class V2UpstreamRuntime(_Remote):
    remote_protocol = "v2"
