"""vLLM on GPU machines: the replica is ``vllm serve`` itself, not a Modelport worker.

vLLM already speaks the OpenAI-compatible API that chat and completion endpoints use, so the
supervisor launches it directly with the command this class builds, and the gateway treats it
like any other replica. It cannot run on a CPU-only machine; the command line is tested here.

Options map to ``vllm serve`` flags: ``max_model_len``, ``gpu_memory_utilization``,
``tensor_parallel_size``, ``dtype``, ``quantization``, and ``extra_args`` (a list, verbatim).
The API key that the gateway sends reaches vLLM through ``VLLM_API_KEY``, never argv.
vLLM reports units as OpenAI ``usage`` (the gateway asks streams for it: ``include_usage``),
and continues the gateway's trace when given ``--otlp-traces-endpoint`` in ``extra_args``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelport.core.errors import InvalidRequest
from modelport.core.replica import ReplicaSpec
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime

__all__ = ["VllmRuntime"]

_FLAGS = (
    "max_model_len",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "dtype",
    "quantization",
)


# What vLLM and the libraries under it read from the environment (its own settings, the
# Hugging Face cache, GPU and collective-communication settings).
_ENVIRONMENT_PREFIXES = ("VLLM_", "HF_", "CUDA_", "NCCL_", "TORCH_", "TRITON_")


class VllmRuntime(ModelRuntime):
    readiness_path = "/health"

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        if not (artifact_dir / "config.json").is_file():
            raise InvalidRequest(
                "a vllm artifact is a Hugging Face model directory (with config.json)"
            )
        return Signature(
            inputs=[TensorSpec(name="prompt", datatype="BYTES", shape=[-1])],
            outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
        )

    @classmethod
    def replica_command(cls, spec: ReplicaSpec, host: str, port: int, token: str) -> list[str]:
        command = [
            "vllm",
            "serve",
            str(spec.artifact_dir),
            "--host",
            host,
            "--port",
            str(port),
            "--served-model-name",
            spec.endpoint,
            "--disable-log-requests",
        ]
        for name in _FLAGS:
            if name in spec.options:
                command += ["--" + name.replace("_", "-"), str(spec.options[name])]
        extra = spec.options.get("extra_args", [])
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise InvalidRequest("runtime option extra_args must be a list of strings")
        return command + extra

    @classmethod
    def replica_environment(cls, spec: ReplicaSpec, token: str) -> dict[str, str]:
        # The gateway sends the token as a bearer key; clients never see it. vLLM reads it
        # from its environment, which (unlike its command line) other local users cannot read.
        env = {
            name: value
            for name, value in os.environ.items()
            if name.startswith(_ENVIRONMENT_PREFIXES) and name != "VLLM_API_KEY"
        }
        return {**env, "VLLM_API_KEY": token}

    async def load(self) -> None:
        raise RuntimeError("vllm replicas run 'vllm serve', not a Modelport worker")
