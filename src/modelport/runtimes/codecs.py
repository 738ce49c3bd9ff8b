"""Open Inference Protocol (V2) request and response codec, JSON and binary tensor extension.

The binary extension is what ``tritonclient`` sends by default: the body starts with a JSON
header of ``Inference-Header-Content-Length`` bytes, followed by raw tensor bytes in input
order, each input naming its size in ``parameters.binary_data_size``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelport.core.errors import InvalidRequest
from modelport.core.jsonbody import json_object
from modelport.core.signature import DATATYPES, Signature
from modelport.runtimes.v2_validation import (
    InputHeader,
    RequestLimits,
    bytes_tensor,
    check_header,
    numeric_tensor,
)

__all__ = [
    "InferRequest",
    "RequestLimits",
    "RequestedOutput",
    "check_inputs",
    "check_outputs",
    "decode_request",
    "encode_response",
]

_NUMPY_TO_V2 = {np.dtype(v).str: k for k, v in DATATYPES.items() if k != "BYTES"}


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] = field(default_factory=list)
    binary_output: bool = False

    @property
    def rows(self) -> int:
        """Rows in the batch: the first dimension of the first input."""
        first = next(iter(self.inputs.values()), None)
        return int(first.shape[0]) if first is not None and first.ndim else 1


def _fail(message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest(message, **details)


def _decode_bytes_tensor(raw: bytes, count: int, field: str) -> list[bytes]:
    """Length-prefixed items; stops past ``count`` so that a body of empty items stays cheap."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(items) <= count:
        (size,) = struct.unpack_from("<I", raw, offset) if offset + 4 <= len(raw) else (-1,)
        if size < 0 or offset + 4 + size > len(raw):
            raise _fail(
                f"{field} BYTES binary data is truncated: item {len(items)} runs past "
                "parameters.binary_data_size",
                param=f"{field}.parameters.binary_data_size",
            )
        items.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    if len(items) != count:
        raise _fail(
            f"{field} has {'more than ' if offset < len(raw) else ''}{len(items)} BYTES items "
            f"in its binary data, but its shape needs {count}",
            param=f"{field}.shape",
        )
    return items


def _encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(value)) + value)
    return b"".join(parts)


def _binary_tensor(item: InputHeader, chunk: bytes) -> np.ndarray:
    if item.datatype == "BYTES":
        array = np.empty(item.count, dtype=object)
        array[:] = _decode_bytes_tensor(chunk, item.count, item.field)
        return array.reshape(item.shape)
    dtype = np.dtype(DATATYPES[item.datatype])
    if len(chunk) != item.count * dtype.itemsize:
        raise _fail(
            f"{item.field}.parameters.binary_data_size is {len(chunk)}, but shape {item.shape} "
            f"of {item.datatype} needs {item.count * dtype.itemsize} bytes",
            param=f"{item.field}.parameters.binary_data_size",
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(item.shape)


def decode_request(
    body: bytes, header_length: int | None = None, limits: RequestLimits | None = None
) -> InferRequest:
    """Parse a V2 inference request; raise ``InvalidRequest`` naming the field that is wrong.

    ``header_length`` is the parsed ``Inference-Header-Content-Length`` (binary extension):
    the JSON header's size, the raw tensor bytes following it.
    """
    if header_length is not None and header_length > len(body):
        raise _fail(
            f"header Inference-Header-Content-Length is {header_length}, but the body has only "
            f"{len(body)} bytes",
            param="Inference-Header-Content-Length",
        )
    header = body[:header_length] if header_length is not None else body
    payload = json_object(header, "a JSON object with an 'inputs' list")
    checked = check_header(payload, limits or RequestLimits())
    binary = memoryview(body)[len(header) :]
    # numpy folds JSON booleans mixed with numbers into numbers; look for them only when the
    # header holds a boolean at all (a byte search, not a walk over the data).
    maybe_bools = b"true" in header or b"false" in header
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in checked.inputs:
        if item.binary_size is not None:
            chunk = bytes(binary[offset : offset + item.binary_size])
            if len(chunk) != item.binary_size:
                raise _fail(
                    f"{item.field}.parameters.binary_data_size is {item.binary_size}, but only "
                    f"{len(chunk)} bytes of the body are left for it",
                    param=f"{item.field}.parameters.binary_data_size",
                )
            offset += item.binary_size
            inputs[item.name] = _binary_tensor(item, chunk)
        elif item.datatype == "BYTES":
            inputs[item.name] = bytes_tensor(item)
        else:
            inputs[item.name] = numeric_tensor(item, maybe_bools)
    if offset != len(binary):
        raise _fail(
            f"the body has {len(binary) - offset} bytes after the binary data of the last input: "
            "check Inference-Header-Content-Length and every parameters.binary_data_size",
            param="Inference-Header-Content-Length",
        )
    return InferRequest(
        id=checked.id,
        inputs=inputs,
        outputs=[RequestedOutput(output.name, output.binary) for output in checked.outputs],
        binary_output=checked.binary_output,
    )


def check_inputs(request: InferRequest, signature: Signature) -> None:
    """Refuse inputs whose name, datatype or shape the model does not take."""
    expected = {spec.name: spec for spec in signature.inputs}
    for name, array in request.inputs.items():
        spec = expected.get(name)
        if spec is None:
            raise _fail(
                f"unknown input '{name}': this model takes {', '.join(map(repr, expected))}",
                input=name,
            )
        datatype = "BYTES" if array.dtype == object else _NUMPY_TO_V2[array.dtype.str]
        if datatype != spec.datatype:
            raise _fail(
                f"input '{name}' has datatype {datatype}, but the model expects {spec.datatype}",
                input=name,
            )
        if not spec.accepts_shape(list(array.shape)):
            raise _fail(
                f"input '{name}' has shape {list(array.shape)}, but the model expects "
                f"{spec.shape} (-1 means any size)",
                input=name,
            )
    missing = [s.name for s in signature.inputs if not s.optional and s.name not in request.inputs]
    if missing:
        raise _fail(f"missing input(s) {', '.join(map(repr, missing))}", missing=missing)
    alternatives = [s.name for s in signature.inputs if s.optional]
    given = [name for name in alternatives if name in request.inputs]
    if alternatives and len(given) != 1:
        raise _fail(
            f"give exactly one of the inputs {', '.join(map(repr, alternatives))}",
            alternatives=alternatives,
        )


def check_outputs(request: InferRequest, signature: Signature) -> None:
    """Refuse requested outputs the model does not return, before the model runs."""
    known = [spec.name for spec in signature.outputs]
    if not known:  # a custom model given no output signature: checked after it answers
        return
    for index, requested in enumerate(request.outputs):
        if requested.name not in known:
            raise _fail(
                f"outputs[{index}].name: unknown output '{requested.name}': this model returns "
                f"{', '.join(map(repr, known))}",
                param=f"outputs[{index}].name",
            )


def _v2_datatype(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    return _NUMPY_TO_V2.get(array.dtype.str, "BYTES")


def encode_response(
    request: InferRequest, outputs: dict[str, np.ndarray], *, model_name: str, model_version: str
) -> tuple[bytes, int | None]:
    """Encode outputs; returns the body and, for binary responses, the JSON header length."""
    wanted = request.outputs or [RequestedOutput(name, request.binary_output) for name in outputs]
    encoded: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for requested in wanted:
        array = outputs.get(requested.name)
        if array is None:
            raise _fail(
                f"unknown output '{requested.name}': this model returns "
                f"{', '.join(map(repr, outputs))}"
            )
        datatype = _v2_datatype(array)
        entry: dict[str, Any] = {
            "name": requested.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if requested.binary or request.binary_output:
            raw = (
                _encode_bytes_tensor(array)
                if datatype == "BYTES"
                else np.ascontiguousarray(array).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        encoded.append(entry)
    payload: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": encoded,
    }
    if request.id is not None:
        payload["id"] = request.id
    header = orjson.dumps(payload)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
