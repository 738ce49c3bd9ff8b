"""Checks of Open Inference Protocol (V2) requests, field by field, before any tensor is built.

Every refusal names the field it refuses (``inputs[0].parameters.binary_data_size``), so that a
client's mistake is a 400 saying what to fix, never a runtime's 500. Caps (rows, elements) are
413s that state the limit and the setting that raises it. Numeric data is checked with numpy
on whole arrays: the common path runs no Python loop per element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.core.errors import InvalidRequest, PayloadTooLarge
from modelport.core.signature import DATATYPES

__all__ = [
    "InputHeader",
    "OutputHeader",
    "RequestHeader",
    "RequestLimits",
    "bytes_tensor",
    "check_header",
    "numeric_tensor",
    "parse_header_length",
]

_HEADER = "Inference-Header-Content-Length"
_MAX_DIMS = 32  # numpy 1.x's limit; more is a client's mistake, not a model's shape
_SCALARS = (str, int, float)  # bool is an int
_INTEGERS = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
# The largest finite value of each float narrower than JSON's (float64): what a cast may overflow.
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32)}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Caps on one request; each message names the ``MODELPORT_*`` setting that raises it."""

    max_rows: int = 10_000
    max_tensor_elements: int = 16 * 1024 * 1024


@dataclass(slots=True)  # not frozen: its __init__ costs ~1 us more a request
class InputHeader:
    """One input as its JSON describes it; ``data`` or ``binary_size`` holds its values."""

    field: str  # "inputs[2]", for messages
    name: str
    datatype: str
    shape: list[int]
    count: int
    binary_size: int | None
    data: list[Any] | None


@dataclass(slots=True)  # not frozen: its __init__ costs ~1 us more a request
class OutputHeader:
    name: str
    binary: bool


@dataclass(slots=True)  # not frozen: its __init__ costs ~1 us more a request
class RequestHeader:
    id: str | None
    inputs: list[InputHeader]
    outputs: list[OutputHeader]
    binary_output: bool


def _invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field} {problem}", param=field)


def parse_header_length(raw: bytes | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as a byte count; 400 unless it is one."""
    if raw is None:
        return None
    text = raw.strip()
    # bytes.isdigit() is ASCII-only: it refuses "-1", "1.5", "1e3", "" and "٣". The length cap
    # keeps int() clear of Python's limit on digits (a ValueError, hence a 500, past 4300).
    if not text.isdigit() or len(text) > 18:
        shown = text[:40].decode("utf-8", "replace")
        raise InvalidRequest(
            f"header {_HEADER} must be a non-negative integer (bytes of JSON before the binary "
            f"data), got {shown!r}",
            param=_HEADER,
        )
    return int(text)


def _parameters(value: Any, field: str) -> dict[str, Any]:
    """A ``parameters`` object: absent or null is empty; values are strings, numbers or bools."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(field, "must be an object")
    for key, item in value.items():
        if not isinstance(item, _SCALARS):
            raise _invalid(f"{field}.{key}", "must be a string, a number or a boolean")
    return value


def _flag(parameters: dict[str, Any], key: str, field: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise _invalid(f"{field}.{key}", "must be true or false")
    return value


def _shape(value: Any, field: str, limits: RequestLimits) -> tuple[list[int], int]:
    if not isinstance(value, list):
        raise _invalid(field, "must be a list of non-negative integers")
    if len(value) > _MAX_DIMS:
        raise _invalid(field, f"has {len(value)} dimensions; at most {_MAX_DIMS} are supported")
    for axis, dim in enumerate(value):
        # type() rather than isinstance(): True is an int to Python, never a dimension.
        if type(dim) is not int or dim < 0:
            raise _invalid(f"{field}[{axis}]", f"must be a non-negative integer, got {dim!r}")
    count = math.prod(value)
    # A zero anywhere makes the count 0; a huge dimension beside it still breaks numpy.
    if count > limits.max_tensor_elements or (
        count == 0 and max(value, default=0) > limits.max_tensor_elements
    ):
        raise PayloadTooLarge(
            f"{field} {value} is over the limit of {limits.max_tensor_elements} elements per "
            "tensor: send smaller tensors, or raise the server setting "
            "MODELPORT_MAX_TENSOR_ELEMENTS",
            param=field,
            limit=limits.max_tensor_elements,
        )
    rows = value[0] if value else 1
    if rows > limits.max_rows:
        raise PayloadTooLarge(
            f"{field} has {rows} rows, over the limit of {limits.max_rows} rows per request: "
            "split the request, or raise the server setting MODELPORT_MAX_REQUEST_ROWS",
            param=field,
            limit=limits.max_rows,
        )
    return value, count


def _input(raw: Any, field: str, limits: RequestLimits) -> InputHeader:
    if not isinstance(raw, dict):
        raise _invalid(field, "must be an object with 'name', 'datatype', 'shape' and 'data'")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{field}.name", "must be a non-empty string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise _invalid(
            f"{field}.datatype",
            f"has unknown datatype {datatype!r}: use one of {', '.join(DATATYPES)}",
        )
    shape, count = _shape(raw.get("shape"), f"{field}.shape", limits)
    parameters = _parameters(raw.get("parameters"), f"{field}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise _invalid(
            f"{field}.parameters.binary_data_size", f"must be a non-negative integer, got {size!r}"
        )
    data = raw.get("data")
    if size is not None and data is not None:
        raise _invalid(field, "gives both 'data' and parameters.binary_data_size: give one")
    if size is None and data is None:
        raise _invalid(field, "needs 'data' or binary data (parameters.binary_data_size)")
    if data is not None and not isinstance(data, list):
        raise _invalid(f"{field}.data", "must be a list (flat, or nested as the shape)")
    return InputHeader(field, name, datatype, shape, count, size, data)


def _outputs(value: Any) -> list[OutputHeader]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("outputs", "must be a list of objects with a 'name'")
    outputs: list[OutputHeader] = []
    for index, raw in enumerate(value):
        field = f"outputs[{index}]"
        if not isinstance(raw, dict):
            raise _invalid(field, "must be an object with a 'name'")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{field}.name", "must be a non-empty string")
        if any(output.name == name for output in outputs):
            raise _invalid(f"{field}.name", f"asks for output {name!r} a second time")
        parameters = _parameters(raw.get("parameters"), f"{field}.parameters")
        outputs.append(OutputHeader(name, _flag(parameters, "binary_data", f"{field}.parameters")))
    return outputs


def check_header(payload: dict[str, Any], limits: RequestLimits) -> RequestHeader:
    """Every field of a V2 request's JSON, checked; tensors are built from it afterwards."""
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid("id", f"must be a string, got {request_id!r}")
    parameters = _parameters(payload.get("parameters"), "parameters")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _invalid("inputs", "must be a non-empty list: the request needs a non-empty 'inputs'")
    inputs: list[InputHeader] = []
    for index, raw in enumerate(raw_inputs):
        item = _input(raw, f"inputs[{index}]", limits)
        if any(other.name == item.name for other in inputs):
            raise _invalid(f"{item.field}.name", f"gives input {item.name!r} a second time")
        inputs.append(item)
    return RequestHeader(
        id=request_id,
        inputs=inputs,
        outputs=_outputs(payload.get("outputs")),
        binary_output=_flag(parameters, "binary_data_output", "parameters"),
    )


def _layout(found: tuple[int, ...], item: InputHeader) -> None:
    """Data is flat, or nested exactly as the shape says."""
    if found == tuple(item.shape) or (len(found) == 1 and found[0] == item.count):
        return
    size = math.prod(found)
    if size != item.count:
        raise _invalid(
            f"{item.field}.data",
            f"has {size} values, but shape {item.shape} needs {item.count}",
        )
    raise _invalid(
        f"{item.field}.data",
        f"is nested as {list(found)}, but shape is {item.shape}: nest it as the shape or give "
        "a flat list",
    )


def _culprit(data: list[Any]) -> str:
    """The first value that is not a number, for the message (only on the error path)."""
    stack: list[Any] = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r}"[:40]
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            return "an integer too large for 64 bits"
    return "mixed values"


def _holds_bools(data: list[Any]) -> bool:
    """Whether rectangular ``data`` holds a boolean: a Python loop per row, a C loop per value."""
    stack = [data]
    while stack:
        values = stack.pop()
        if values and type(values[0]) is list:
            stack.extend(values)
        elif bool in set(map(type, values)):
            return True
    return False


def _rectangular(data: list[Any], field: str, dtype: Any = None) -> np.ndarray:
    try:
        return np.asarray(data, dtype=dtype)
    except (ValueError, TypeError) as exc:  # ragged, or nested deeper than numpy allows
        raise _invalid(
            field, "must be a rectangular list: flat, or nested as the shape says"
        ) from exc


def numeric_tensor(item: InputHeader, maybe_bools: bool) -> np.ndarray:
    """JSON ``data`` of a numeric or BOOL input as an array of its datatype.

    ``maybe_bools``: the request's JSON holds ``true`` or ``false`` somewhere. numpy folds
    booleans mixed with numbers into numbers, so only then are the values looked at one by one.
    """
    assert item.data is not None
    field = f"{item.field}.data"
    dtype = np.dtype(DATATYPES[item.datatype])
    parsed = _rectangular(item.data, field)
    _layout(parsed.shape, item)
    if parsed.size == 0:
        return np.empty(item.shape, dtype=dtype)
    kind = parsed.dtype.kind
    if item.datatype == "BOOL":
        wanted, ok = "true or false", kind == "b"
    elif item.datatype in _INTEGERS:
        wanted, ok = "integers", kind in "iu"
    else:
        wanted, ok = "numbers", kind in "iuf"
    if ok and kind != "b" and maybe_bools:
        ok = not _holds_bools(item.data)
    if not ok:
        found = "a boolean" if kind == "b" else _culprit(item.data)
        raise _invalid(
            field,
            f"does not fit datatype {item.datatype}: it must hold only {wanted}; found {found}",
        )
    if kind in "iu" and item.datatype in _INTEGERS:
        info = np.iinfo(dtype)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise _invalid(field, f"has values outside the range of {item.datatype}")
    # JSON holds no NaN or infinity (the parser refuses them), so only a cast to a narrower
    # float can overflow: bound those before the cast rather than inspect every result.
    largest = _FLOAT_MAX.get(dtype)
    if largest is not None and np.abs(parsed).max() > largest:
        raise _invalid(field, f"has values outside the range of {item.datatype}")
    return parsed.astype(dtype, copy=False).reshape(item.shape)


def bytes_tensor(item: InputHeader) -> np.ndarray:
    """JSON ``data`` of a BYTES input: strings, as an object array of UTF-8 bytes."""
    assert item.data is not None
    field = f"{item.field}.data"
    parsed = _rectangular(item.data, field, object)
    _layout(parsed.shape, item)
    values = parsed.ravel().tolist()
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise _invalid(f"{field}", f"must hold only strings for BYTES; value {index} is not")
        values[index] = value.encode()
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(item.shape)
