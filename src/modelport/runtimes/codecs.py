"""Open Inference Protocol (V2) request and response codec, JSON and binary tensor extension.

The binary extension is what ``tritonclient`` sends by default: the body starts with a JSON
header of ``Inference-Header-Content-Length`` bytes, followed by raw tensor bytes in input
order, each input naming its size in ``parameters.binary_data_size``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelport.core.errors import InvalidRequest
from modelport.core.jsonbody import json_object
from modelport.core.signature import DATATYPES, Signature

__all__ = ["InferRequest", "RequestedOutput", "decode_request", "encode_response"]

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


def _decode_bytes_tensor(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _fail("BYTES tensor data is truncated")
        (size,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return items


def _encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(value)) + value)
    return b"".join(parts)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item))
        return flat
    return data


def _tensor(raw: dict[str, Any], binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str):
        raise _fail("every input needs a 'name' string")
    if datatype not in DATATYPES:
        raise _fail(
            f"input '{name}' has unknown datatype {datatype!r}: use one of {', '.join(DATATYPES)}"
        )
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _fail(f"input '{name}' needs 'shape' as a list of non-negative integers")
    count = math.prod(shape)
    size = (raw.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        chunk = bytes(binary[offset : offset + size])
        if len(chunk) != size:
            raise _fail(f"input '{name}' declares {size} binary bytes but the body is shorter")
        offset += size
        if datatype == "BYTES":
            array = np.array(_decode_bytes_tensor(chunk), dtype=object)
        else:
            dtype = np.dtype(DATATYPES[datatype])
            if size != count * dtype.itemsize:
                raise _fail(
                    f"input '{name}' has {size} binary bytes, but shape {shape} of {datatype} "
                    f"needs {count * dtype.itemsize}"
                )
            array = np.frombuffer(chunk, dtype=dtype)
    elif "data" in raw:
        flat = _flatten(raw["data"])
        if datatype == "BYTES":
            array = np.array([v.encode() if isinstance(v, str) else v for v in flat], dtype=object)
        else:
            try:
                array = np.asarray(flat, dtype=DATATYPES[datatype])
            except (TypeError, ValueError) as exc:
                raise _fail(f"input '{name}' data does not fit datatype {datatype}: {exc}") from exc
    else:
        raise _fail(f"input '{name}' has neither 'data' nor binary data")
    if array.size != count:
        raise _fail(f"input '{name}' has {array.size} values, but shape {shape} needs {count}")
    return array.reshape(shape), offset


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse a V2 inference request; raise ``InvalidRequest`` saying what is wrong."""
    header = body[:header_length] if header_length is not None else body
    payload = json_object(header, "a JSON object with an 'inputs' list")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _fail("request needs a non-empty 'inputs' list")
    binary = memoryview(body)[header_length or len(body) :]
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise _fail("each item of 'inputs' must be an object")
        array, offset = _tensor(raw, binary, offset)
        inputs[raw["name"]] = array
    parameters = payload.get("parameters") or {}
    outputs = [
        RequestedOutput(
            name=str(out.get("name")), binary=bool((out.get("parameters") or {}).get("binary_data"))
        )
        for out in payload.get("outputs") or []
        if isinstance(out, dict)
    ]
    request_id = payload.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_output=bool(parameters.get("binary_data_output")),
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
