"""Tensor signatures in Open Inference Protocol (V2) terms."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DATATYPES", "Signature", "TensorSpec"]

# V2 datatype -> numpy dtype string. BYTES tensors travel as Python lists of bytes.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


class TensorSpec(BaseModel):
    """One named tensor; ``-1`` in ``shape`` matches any size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    datatype: str = Field(pattern="^(" + "|".join(DATATYPES) + ")$")
    shape: list[int]
    optional: bool = False  # alternatives, e.g. pixels or an encoded image: give one

    def accepts_shape(self, shape: list[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


class Signature(BaseModel):
    """What a model takes and returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)

    def to_v2_metadata(self) -> dict[str, Any]:
        return {
            "inputs": [spec.model_dump(exclude_defaults=True) for spec in self.inputs],
            "outputs": [spec.model_dump(exclude_defaults=True) for spec in self.outputs],
        }
