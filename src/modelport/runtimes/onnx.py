"""ONNX models through onnxruntime (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime, find_model_file

__all__ = ["OnnxRuntime"]

_ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _spec(arg: Any) -> TensorSpec:
    shape = [dim if isinstance(dim, int) else -1 for dim in arg.shape]
    return TensorSpec(name=arg.name, datatype=_ONNX_TYPES.get(arg.type, "BYTES"), shape=shape)


def _session(path: Path, options: dict[str, Any]) -> ort.InferenceSession:
    session_options = ort.SessionOptions()
    # One replica is one process; its own thread pool would fight the others for cores.
    session_options.intra_op_num_threads = int(options.get("threads", 1))
    session_options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InvalidRequest(f"{path.name} is not a valid ONNX model: {exc}") from exc


class OnnxRuntime(ModelRuntime):
    """Runs ``*.onnx``; option ``threads`` sets onnxruntime's intra-op threads (default 1)."""

    _session: ort.InferenceSession

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        session = _session(find_model_file(artifact_dir, (".onnx",), options), options)
        return Signature(
            inputs=[_spec(arg) for arg in session.get_inputs()],
            outputs=[_spec(arg) for arg in session.get_outputs()],
        )

    async def load(self) -> None:
        options = self.settings.options
        self._session = _session(
            find_model_file(self.settings.artifact_dir, (".onnx",), options), options
        )
        self._outputs = [arg.name for arg in self._session.get_outputs()]

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Small tabular models answer in microseconds: calling inline beats a thread hop.
        results = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, (np.asarray(r) for r in results), strict=True))
