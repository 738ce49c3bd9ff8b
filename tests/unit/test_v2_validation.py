"""Every malformed V2 request is a 400 (or a 413 past a limit) naming the field, before any
runtime sees it. Each case here reached the runtime as a 500, or was accepted, before."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelport.core.errors import InvalidRequest, ModelportError, PayloadTooLarge
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.codecs import RequestLimits, check_outputs, decode_request
from modelport.runtimes.v2_validation import parse_header_length

_INPUT = {"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}


def _body(*inputs: dict[str, Any], **request: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs) or [_INPUT], **request})


def _with(**changes: Any) -> dict[str, Any]:
    return {**_INPUT, **changes}


def _nested(depth: int, shape: list[int]) -> bytes:
    """A request whose data is ``depth`` lists deep, written by hand: orjson writes 254 at most."""
    head = orjson.dumps(_with(shape=shape, data=None))[:-1].replace(b',"data":null', b"")
    return b'{"inputs":[' + head + b',"data":' + b"[" * depth + b"1" + b"]" * depth + b"}]}"


def _refused(body: bytes, header_length: int | None = None, **limits: int) -> ModelportError:
    with pytest.raises(ModelportError) as info:
        decode_request(body, header_length, RequestLimits(**limits))
    return info.value


def _binary(header: dict[str, Any], raw: bytes) -> tuple[bytes, int]:
    encoded = orjson.dumps(header)
    return encoded + raw, len(encoded)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        # parameters that are not objects, at every level
        (_body(parameters="yes"), "parameters", "must be an object"),
        (_body(parameters=[1]), "parameters", "must be an object"),
        (_body(_with(parameters=7)), "inputs[0].parameters", "must be an object"),
        (
            _body(outputs=[{"name": "label", "parameters": "binary"}]),
            "outputs[0].parameters",
            "must be an object",
        ),
        (_body(parameters={"x": {"y": 1}}), "parameters.x", "string, a number or a boolean"),
        (_body(parameters={"binary_data_output": "yes"}), "parameters.binary_data_output", ""),
        # binary_data_size that is not a byte count
        *[
            (
                _body(_with(data=None, parameters={"binary_data_size": size})),
                "inputs[0].parameters.binary_data_size",
                "must be a non-negative integer",
            )
            for size in ("24", 24.0, True, -1)
        ],
        # shapes
        (_body(_with(shape=[True, 3])), "inputs[0].shape[0]", "must be a non-negative integer"),
        (_body(_with(shape=[2, 3.0])), "inputs[0].shape[1]", "must be a non-negative integer"),
        (_body(_with(shape=[2, -3])), "inputs[0].shape[1]", "must be a non-negative integer"),
        (_body(_with(shape="2x3")), "inputs[0].shape", "must be a list"),
        (_body(_with(shape=[1] * 40)), "inputs[0].shape", "at most 32 are supported"),
        # data: depth, nesting, values
        (_nested(1000, [1]), "inputs[0].data", "rectangular"),
        (_nested(40, [1] * 30), "inputs[0].data", "nested as [1, 1,"),
        (_body(_with(data=[[1, 2], [3, 4], [5, 6]])), "inputs[0].data", "nested as [3, 2]"),
        (_body(_with(data=[[1, 2, 3], [4, 5]])), "inputs[0].data", "rectangular"),
        (_body(_with(data=[1, 2, None, 4, 5, 6])), "inputs[0].data", "found None"),
        (_body(_with(data=[1, 2, "3", 4, 5, 6])), "inputs[0].data", "found '3'"),
        (_body(_with(data=[1, 2, True, 4, 5, 6])), "inputs[0].data", "found True"),
        (_body(_with(data=[True] * 6)), "inputs[0].data", "found a boolean"),
        (_body(_with(data=[[1, 2, 3], [4, 5, {}]])), "inputs[0].data", "found {}"),
        (_body(_with(data=5)), "inputs[0].data", "must be a list"),
        (_body(_with(datatype="INT64", data=[1.5] * 6)), "inputs[0].data", "only integers"),
        (_body(_with(datatype="INT8", data=[300] * 6)), "inputs[0].data", "range of INT8"),
        (_body(_with(datatype="UINT8", data=[-1] * 6)), "inputs[0].data", "range of UINT8"),
        (_body(_with(datatype="INT64", data=[2**63] * 6)), "inputs[0].data", "range of INT64"),
        (
            json.dumps({"inputs": [_with(datatype="INT64", data=[2**70] * 6)]}).encode(),
            "inputs[0].data",
            "only integers",  # orjson reads integers past 64 bits as floats
        ),
        (_body(_with(datatype="FP16", data=[1e10] * 6)), "inputs[0].data", "range of FP16"),
        (_body(_with(datatype="BOOL", data=[1, 0] * 3)), "inputs[0].data", "true or false"),
        (_body(_with(datatype="BYTES", data=["a", 1] * 3)), "inputs[0].data", "only strings"),
        (_body(_with(datatype="BYTES", data=[["a"], "b"] * 3)), "inputs[0].data", ""),
        # inputs as a whole
        (_body(_INPUT, _INPUT), "inputs[1].name", "gives input 'input' a second time"),
        (_body(_with(name="")), "inputs[0].name", "non-empty string"),
        (_body(_with(name=3)), "inputs[0].name", "non-empty string"),
        (_body(_with(datatype=["FP32"])), "inputs[0].datatype", "unknown datatype"),
        (_body(_with(datatype=None)), "inputs[0].datatype", "unknown datatype"),
        (_body("input"), "inputs[0]", "must be an object"),
        (_body(_with(data=None)), "inputs[0]", "needs 'data' or binary data"),
        (
            _body(_with(parameters={"binary_data_size": 24})),
            "inputs[0]",
            "gives both 'data' and parameters.binary_data_size",
        ),
        (orjson.dumps({"inputs": "input"}), "inputs", "non-empty list"),
        (orjson.dumps({"inputs": []}), "inputs", "non-empty list"),
        # outputs and id
        (_body(outputs="label"), "outputs", "must be a list"),
        (_body(outputs=["label"]), "outputs[0]", "must be an object"),
        (_body(outputs=[{"parameters": {}}]), "outputs[0].name", "non-empty string"),
        (_body(outputs=[{"name": 1}]), "outputs[0].name", "non-empty string"),
        (
            _body(outputs=[{"name": "label"}, {"name": "label"}]),
            "outputs[1].name",
            "a second time",
        ),
        (
            _body(outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
            "outputs[0].parameters.binary_data",
            "true or false",
        ),
        (_body(id=7), "id", "must be a string"),
        (_body(id=["a"]), "id", "must be a string"),
    ],
)
def test_malformed_json_requests_name_the_field(body: bytes, field: str, message: str) -> None:
    error = _refused(body)
    assert error.status == 400
    assert error.details["param"] == field
    assert error.message.startswith(field) and message in error.message


@pytest.mark.parametrize("raw", [b"abc", b"-1", b"1.5", b"", b"1e3", b"9" * 5000, b"\xd9\xa3"])
def test_header_length_must_be_a_byte_count(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_header_length(raw)
    assert info.value.status == 400
    assert info.value.details["param"] == "Inference-Header-Content-Length"
    assert "must be a non-negative integer" in info.value.message


def test_header_length_past_the_body() -> None:
    assert parse_header_length(b" 12 ") == 12 and parse_header_length(None) is None
    body = _body()
    error = _refused(body, len(body) + 1)
    assert "but the body has only" in error.message


def test_binary_data_must_account_for_every_byte() -> None:
    array = np.arange(6, dtype=np.float32)
    header = {"inputs": [_with(data=None, parameters={"binary_data_size": 24})]}
    body, length = _binary(header, array.tobytes() + b"extra")
    assert "5 bytes after the binary data of the last input" in _refused(body, length).message
    body, length = _binary(header, array.tobytes()[:20])
    error = _refused(body, length)
    assert error.details["param"] == "inputs[0].parameters.binary_data_size"
    body, length = _binary({"inputs": [_INPUT]}, b"stray")
    assert "5 bytes after" in _refused(body, length).message
    mismatched = {"inputs": [_with(data=None, parameters={"binary_data_size": 20})]}
    body, length = _binary(mismatched, array.tobytes()[:20])
    assert "needs 24 bytes" in _refused(body, length).message


def test_binary_bytes_tensors_are_checked_item_by_item() -> None:
    items = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"cde"))
    tensor = {"name": "t", "datatype": "BYTES", "shape": [2]}
    header = {"inputs": [{**tensor, "parameters": {"binary_data_size": len(items)}}]}
    body, length = _binary(header, items)
    assert decode_request(body, length).inputs["t"].tolist() == [b"ab", b"cde"]
    three = {"inputs": [{**tensor, "shape": [3], "parameters": {"binary_data_size": len(items)}}]}
    body, length = _binary(three, items)
    assert "has 2 BYTES items" in _refused(body, length).message
    lying = struct.pack("<I", 1000) + b"ab"
    short = {"inputs": [{**tensor, "shape": [1], "parameters": {"binary_data_size": 6}}]}
    body, length = _binary(short, lying)
    assert "truncated" in _refused(body, length).message
    many = b"\0\0\0\0" * 10_000  # empty items: decoding stops after shape's count
    one = {"inputs": [{**tensor, "shape": [1], "parameters": {"binary_data_size": len(many)}}]}
    body, length = _binary(one, many)
    assert "more than 2 BYTES items" in _refused(body, length).message


def test_limits_are_413s_naming_the_setting() -> None:
    rows = _refused(_body(_with(shape=[20, 3], data=[0.0] * 60)), max_rows=10)
    assert isinstance(rows, PayloadTooLarge) and rows.status == 413
    assert "limit of 10 rows per request" in rows.message
    assert "MODELPORT_MAX_REQUEST_ROWS" in rows.message
    elements = _refused(_body(_with(shape=[2, 50], data=[0.0] * 100)), max_tensor_elements=64)
    assert elements.status == 413 and "MODELPORT_MAX_TENSOR_ELEMENTS" in elements.message
    huge = _refused(_body(_with(shape=[0, 2**62], data=[])))
    assert huge.status == 413 and huge.details["param"] == "inputs[0].shape"


def test_unknown_requested_output_is_refused_before_the_model_runs() -> None:
    signature = Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 3])],
        outputs=[TensorSpec(name="label", datatype="INT64", shape=[-1])],
    )
    request = decode_request(_body(outputs=[{"name": "label"}, {"name": "nope"}]))
    with pytest.raises(InvalidRequest) as info:
        check_outputs(request, signature)
    assert info.value.details["param"] == "outputs[1].name"
    check_outputs(request, Signature())  # no declared outputs: checked after the model answers


def test_valid_requests_still_decode() -> None:
    request = decode_request(
        _body(
            _with(parameters={"note": "x"}),
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "empty", "datatype": "INT32", "shape": [0, 3], "data": []},
            {"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": [["a", "é"]]},
            {"name": "small", "datatype": "UINT8", "shape": [2], "data": [0, 255]},
            id="abc",
            parameters={"binary_data_output": True, "priority": 1},
            outputs=[{"name": "label", "parameters": {"binary_data": False}}],
        )
    )
    assert request.id == "abc" and request.binary_output
    assert request.inputs["input"].dtype == np.float32
    assert request.inputs["input"].shape == (2, 3)
    assert request.inputs["mask"].tolist() == [True, False]
    assert request.inputs["empty"].shape == (0, 3) and request.inputs["empty"].dtype == np.int32
    assert request.inputs["text"].tolist() == [[b"a", "é".encode()]]
    assert request.inputs["small"].dtype == np.uint8
    assert [(o.name, o.binary) for o in request.outputs] == [("label", False)]
    nulls = decode_request(_body(id=None, parameters=None, outputs=None))
    assert nulls.id is None and nulls.outputs == []


# Images: the decompression-bomb guard is the server's own, lower limit, stated in a 413.


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue())


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` in its header (what a bomb does) and holds
    no pixels: enough for Pillow to open it, and no memory spent here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return base64.b64encode(png)


async def _digits_runtime(home: Path, max_image_pixels: int) -> Any:
    from modelport.demo.build import build_digits
    from modelport.runtimes.base import RuntimeSettings
    from modelport.runtimes.onnx import OnnxRuntime

    assets = build_digits(home)
    options = {"image": {"input": "image", "feeds": "input", "size": [8, 8], "scale": 16.0}}
    runtime = OnnxRuntime(
        RuntimeSettings(
            name="digits",
            artifact_dir=assets.model.parent,
            signature=OnnxRuntime.inspect(assets.model.parent, options),
            options={**options, "file": "model.onnx"},
            max_image_pixels=max_image_pixels,
        )
    )
    await runtime.load()
    return runtime


async def test_images_over_the_pixel_limit_are_413(tmp_path: Path) -> None:
    runtime = await _digits_runtime(tmp_path, max_image_pixels=64 * 64)
    fine = await runtime.predict({"image": np.array([_png(64, 64)], dtype=object)})
    assert fine["label"].shape == (1,)
    with pytest.raises(PayloadTooLarge) as info:
        await runtime.predict({"image": np.array([_png(8, 8), _png(65, 64)], dtype=object)})
    assert info.value.status == 413
    assert "image 1 has 4160 pixels, over the limit of 4096" in info.value.message
    assert "MODELPORT_MAX_IMAGE_PIXELS" in info.value.message
    # Past Pillow's own bomb limits (a warning at 89M pixels, an error at twice that):
    # still a 413, never a DecompressionBombWarning or DecompressionBombError.
    for side in (10_000, 20_000):
        with pytest.raises(PayloadTooLarge, match="MODELPORT_MAX_IMAGE_PIXELS"):
            await runtime.predict({"image": np.array([_png_header(side, side)], dtype=object)})
