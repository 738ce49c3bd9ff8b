from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.codecs import check_inputs, decode_request, encode_response

SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 3])],
    outputs=[TensorSpec(name="label", datatype="INT64", shape=[-1])],
)


def _json(**tensor) -> bytes:
    base = {"name": "input", "datatype": "FP32", "shape": [2, 3]}
    return orjson.dumps({"id": "r1", "inputs": [{**base, **tensor}]})


def test_nested_and_flat_json_data_decode_alike() -> None:
    flat = decode_request(_json(data=[1, 2, 3, 4, 5, 6]))
    nested = decode_request(_json(data=[[1, 2, 3], [4, 5, 6]]))
    np.testing.assert_array_equal(flat.inputs["input"], nested.inputs["input"])
    assert flat.inputs["input"].dtype == np.float32
    assert flat.id == "r1"
    assert flat.rows == 2
    check_inputs(flat, SIGNATURE)


def test_binary_tensor_extension() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    )
    request = decode_request(header + array.tobytes(), len(header))
    np.testing.assert_array_equal(request.inputs["input"], array)
    body, header_length = encode_response(
        request, {"label": np.array([7, 8])}, model_name="m", model_version="1"
    )
    assert header_length is not None
    meta = orjson.loads(body[:header_length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], np.int64), [7, 8])


def test_bytes_tensors_in_binary_form() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"cde"))
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    request = decode_request(header + raw, len(header))
    assert request.inputs["text"].tolist() == [b"ab", b"cde"]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"nope", None, "not valid JSON"),
        (b'{"inputs": {}}', None, "non-empty 'inputs'"),
        (_json(data=[1, 2]), None, "has 2 values, but shape [2, 3] needs 6"),
        (
            _json(datatype="FP8", data=[1] * 6),
            None,
            "inputs[0].datatype has unknown datatype 'FP8'",
        ),
        (_json(shape="2x3", data=[1] * 6), None, "list of non-negative integers"),
        (_json(shape=[2, 3]), None, "needs 'data' or binary data"),
        (_json(data=[{"a": 1}] * 6), None, "does not fit datatype FP32"),
        (
            _json(parameters={"binary_data_size": 24}),
            len(_json(parameters={"binary_data_size": 24})),
            "but only 0 bytes of the body are left",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, header_length, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_request(body, header_length)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "x", "data": [1] * 6}, "unknown input 'x'"),
        ({"datatype": "FP64", "data": [1] * 6}, "datatype FP64, but the model expects FP32"),
        ({"shape": [3, 2], "data": [1] * 6}, "shape [3, 2], but the model expects [-1, 3]"),
        ({"shape": [6], "data": [1] * 6}, "shape [6]"),
    ],
)
def test_signature_mismatch(tensor: dict, message: str) -> None:
    request = decode_request(_json(**tensor))
    with pytest.raises(InvalidRequest) as info:
        check_inputs(request, SIGNATURE)
    assert message in info.value.message


def test_missing_input_and_unknown_output() -> None:
    two = Signature(
        inputs=[
            TensorSpec(name="input", datatype="FP32", shape=[-1, 3]),
            TensorSpec(name="mask", datatype="BOOL", shape=[-1]),
        ]
    )
    request = decode_request(_json(data=[1] * 6))
    with pytest.raises(InvalidRequest, match="missing input"):
        check_inputs(request, two)
    asked = decode_request(
        orjson.dumps(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1] * 3}],
                "outputs": [{"name": "nope"}],
            }
        )
    )
    with pytest.raises(InvalidRequest, match="unknown output 'nope'"):
        encode_response(asked, {"label": np.array([1])}, model_name="m", model_version="1")


def test_json_response_shape() -> None:
    request = decode_request(_json(data=[1] * 6))
    body, header_length = encode_response(
        request,
        {"label": np.array([1, 0]), "probabilities": np.array([[0.1, 0.9], [0.8, 0.2]], "f4")},
        model_name="m",
        model_version="3",
    )
    assert header_length is None
    payload = orjson.loads(body)
    assert payload["model_version"] == "3" and payload["id"] == "r1"
    assert payload["outputs"][1] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": pytest.approx([0.1, 0.9, 0.8, 0.2]),
    }
