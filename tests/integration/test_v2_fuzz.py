"""Property-based fuzzing of the Open Inference Protocol (V2) against a real server.

Requests start valid (the breast-cancer and digits demos) and get fields replaced by random
JSON, random binary sizes, random Inference-Header-Content-Length headers and stray bytes.
Whatever arrives, the server answers it without a 5xx, and no replica restarts.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from tritonclient.utils import InferenceServerException

from modelport.client import Client
from modelport.core.signature import DATATYPES
from tests.integration.conftest import RunningServer, demo_server

pytestmark = pytest.mark.integration

_ENDPOINTS = {"breast-cancer": 30, "digits": 64}
_MAX_IMAGE_PIXELS = 64 * 64
_FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    env = {
        "MODELPORT_DEMO_MODELS": ",".join(_ENDPOINTS),
        "MODELPORT_MAX_IMAGE_PIXELS": str(_MAX_IMAGE_PIXELS),
        "MODELPORT_MAX_REQUEST_ROWS": "64",
    }
    with demo_server(tmp_path_factory.mktemp("fuzz") / "home", *_ENDPOINTS, env=env) as server:
        with server.client() as admin:
            key: str = admin.create_key("default", "fuzz")["key"]
        yield server, key


def _replicas(admin: Client) -> dict[str, list[tuple[int | None, int]]]:
    return {
        name: [(r["pid"], r["restarts"]) for r in admin.get_endpoint(name)["replica_status"]]
        for name in _ENDPOINTS
    }


@pytest.fixture
def no_restarts(fuzzed: tuple[RunningServer, str]) -> Iterator[None]:
    server, _ = fuzzed
    with server.client() as admin:
        before = _replicas(admin)
        yield
        assert _replicas(admin) == before, "a replica restarted while fuzzing"


@pytest.fixture
def http(fuzzed: tuple[RunningServer, str]) -> Iterator[httpx.Client]:
    server, key = fuzzed
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def _png(side: int, bright_ink: bool) -> str:
    pixels = (
        np.zeros((side, side), np.uint8) if bright_ink else np.full((side, side), 255, np.uint8)
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(list(DATATYPES))
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


def _nested(depth: int) -> list[Any]:
    data: list[Any] = [1]
    for _ in range(depth):
        data = [data]
    return data


_DEEP = st.integers(1, 500).map(_nested)  # json.dumps stops near Python's recursion limit
_PATHS: list[tuple[Any, ...]] = [
    ("id",),
    ("parameters",),
    ("parameters", "binary_data_output"),
    ("inputs",),
    ("inputs", 0),
    ("inputs", 0, "name"),
    ("inputs", 0, "datatype"),
    ("inputs", 0, "shape"),
    ("inputs", 0, "shape", 0),
    ("inputs", 0, "shape", 1),
    ("inputs", 0, "data"),
    ("inputs", 0, "data", 0),
    ("inputs", 0, "parameters"),
    ("inputs", 0, "parameters", "binary_data_size"),
    ("outputs",),
    ("outputs", 0),
    ("outputs", 0, "name"),
    ("outputs", 0, "parameters"),
    ("outputs", 0, "parameters", "binary_data"),
]


def _replace(request: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set ``path`` to ``value`` where the path still leads somewhere; else leave it."""
    node: Any = request
    for step in path[:-1]:
        if isinstance(node, list) and not (isinstance(step, int) and step < len(node)):
            return
        if isinstance(node, dict) and step not in node:
            return
        node = node[step] if isinstance(node, dict | list) else None
    last = path[-1]
    in_list = isinstance(node, list) and isinstance(last, int) and last < len(node)
    if isinstance(node, dict) or in_list:
        node[last] = value


@st.composite
def _json_request(draw: st.DrawFn) -> tuple[str, bytes]:
    endpoint = draw(st.sampled_from(list(_ENDPOINTS)))
    rows = draw(st.integers(0, 3))
    width = _ENDPOINTS[endpoint]
    values = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    tensor: dict[str, Any] = {
        "name": "input",
        "datatype": "FP32",
        "shape": [rows, width],
        "data": draw(st.lists(values, min_size=rows * width, max_size=rows * width)),
    }
    if endpoint == "digits" and draw(st.booleans()):
        side = draw(st.sampled_from([8, 32, 65, 200]))  # 65 and 200: over the pixel cap
        images = st.sampled_from([_png(side, True), _png(side, False), "aGVsbG8=", "%%"])
        tensor = {
            "name": "image",
            "datatype": "BYTES",
            "shape": [rows],
            "data": draw(st.lists(images, min_size=rows, max_size=rows)),
        }
    request: dict[str, Any] = {"id": "fuzz", "inputs": [tensor], "outputs": [{"name": "label"}]}
    if draw(st.booleans()):
        request["inputs"].append(dict(tensor))  # the same input twice
    for _ in range(draw(st.integers(0, 3))):
        _replace(request, draw(st.sampled_from(_PATHS)), draw(_JSON | _DEEP))
    return endpoint, json.dumps(request).encode()


def _assert_answered(response: httpx.Response, body: bytes, seen: Counter[int]) -> None:
    seen[response.status_code] += 1
    assert response.status_code < 500, f"{response.status_code} {response.text} for {body[:300]!r}"
    if response.status_code >= 400:
        assert response.json()["error"], "an error without a message"


def test_fuzzed_json_requests_are_never_5xx(http: httpx.Client, no_restarts: None) -> None:
    seen: Counter[int] = Counter()

    @_FUZZ
    @given(_json_request())
    def check(request: tuple[str, bytes]) -> None:
        endpoint, body = request
        response = http.post(
            f"/v2/models/{endpoint}/infer",
            content=body,
            headers={"content-type": "application/json"},
        )
        _assert_answered(response, body, seen)

    check()
    # The fuzzing reaches the models too, and the caps: not only the first check.
    assert seen[200] and seen[400], seen


_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)


_MUTATIONS = ("datatype", "name", "shape", "raw", "size", "trailing", "length", "images")


@st.composite
def _binary_request(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A valid binary-extension request, then up to three of its parts mutated."""
    endpoint = draw(st.sampled_from(list(_ENDPOINTS)))
    rows = draw(st.integers(0, 3))
    width = _ENDPOINTS[endpoint]
    mutations = draw(st.sets(st.sampled_from(_MUTATIONS), max_size=3))
    tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [rows, width]}
    raw = draw(st.binary(min_size=4 * rows * width, max_size=4 * rows * width))
    if "images" in mutations:  # BYTES in binary form: length-prefixed encoded images
        images = [_png(8, True).encode(), b"not an image", _png(200, False).encode()]
        chosen = draw(st.lists(st.sampled_from(images), min_size=rows, max_size=rows))
        raw = b"".join(len(i).to_bytes(4, "little") + i for i in chosen)
        tensor.update(name="image", datatype="BYTES", shape=[rows])
    if "datatype" in mutations:
        tensor["datatype"] = draw(st.sampled_from(list(DATATYPES)))
    if "name" in mutations:
        tensor["name"] = draw(st.sampled_from(["image", "nope", ""]))
    if "shape" in mutations:
        tensor["shape"] = draw(st.lists(st.integers(0, 70), max_size=3))
    if "raw" in mutations:
        raw = draw(st.binary(max_size=len(raw) + 16))
    size: Any = len(raw)
    if "size" in mutations:
        size = draw(
            st.integers(-4, len(raw) + 16)
            | st.floats(allow_nan=False, allow_infinity=False)
            | _HEADER_TEXT
            | st.booleans()
        )
    tensor["parameters"] = {"binary_data_size": size}
    outputs = [{"name": "label", "parameters": {"binary_data": draw(st.booleans())}}]
    header = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    body = header + raw
    if "trailing" in mutations:
        body += draw(st.binary(min_size=1, max_size=8))
    length: Any = len(header)
    if "length" in mutations:
        length = draw(
            st.integers(-2, len(body) + 4)
            | st.floats(allow_nan=False, allow_infinity=False)
            | _HEADER_TEXT
        )
    return endpoint, body, {"inference-header-content-length": str(length).strip() or "x"}


def test_fuzzed_binary_requests_are_never_5xx(http: httpx.Client, no_restarts: None) -> None:
    seen: Counter[int] = Counter()

    @_FUZZ
    @given(_binary_request())
    def check(request: tuple[str, bytes, dict[str, str]]) -> None:
        endpoint, body, headers = request
        response = http.post(
            f"/v2/models/{endpoint}/infer",
            content=body,
            headers={"content-type": "application/octet-stream", **headers},
        )
        _assert_answered(response, body, seen)

    check()
    assert seen[200] and seen[400], seen


def test_fuzzed_tritonclient_tensors_are_never_5xx(
    fuzzed: tuple[RunningServer, str], no_restarts: None
) -> None:
    server, key = fuzzed
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.uint8])
    arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=70))

    @settings(_FUZZ, max_examples=150)
    @given(
        st.sampled_from(list(_ENDPOINTS)),
        arrays,
        st.sampled_from(["input", "image"]),
        st.booleans(),
        st.booleans(),
    )
    def check(endpoint: str, array: np.ndarray, name: str, binary: bool, out_binary: bool) -> None:
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        output = triton.InferRequestedOutput("label", binary_data=out_binary)
        try:
            result = client.infer(
                endpoint, [tensor], outputs=[output], headers={"Authorization": f"Bearer {key}"}
            )
        except InferenceServerException as exc:
            assert exc.status() is not None and int(exc.status()) < 500, exc.message()
        else:
            assert result.as_numpy("label") is not None

    try:
        check()
    finally:
        client.close()


_ROW = {"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}
_DEEP_BODY = (
    b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,30],"data":'
    + b"[" * 1000
    + b"1"
    + b"]" * 1000
    + b"}]}"
)


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        (json.dumps({"inputs": [_ROW], "parameters": "x"}).encode(), {}, "parameters"),
        (
            json.dumps({"inputs": [{**_ROW, "parameters": [1]}]}).encode(),
            {},
            "inputs[0].parameters",
        ),
        (
            json.dumps(
                {"inputs": [_ROW], "outputs": [{"name": "label", "parameters": 1}]}
            ).encode(),
            {},
            "outputs[0].parameters",
        ),
        (json.dumps({"inputs": [_ROW]}).encode(), {"inference-header-content-length": "1.5"}, ""),
        (
            json.dumps(
                {"inputs": [{**_ROW, "data": None, "parameters": {"binary_data_size": "120"}}]}
            ).encode(),
            {},
            "inputs[0].parameters.binary_data_size",
        ),
        (json.dumps({"inputs": [{**_ROW, "shape": [True, 30]}]}).encode(), {}, "inputs[0].shape"),
        (_DEEP_BODY, {}, "inputs[0].data"),
        (
            json.dumps({"inputs": [{**_ROW, "data": [None] * 30}]}).encode(),
            {},
            "inputs[0].data",
        ),
        (json.dumps({"inputs": [_ROW, _ROW]}).encode(), {}, "inputs[1].name"),
        (json.dumps({"inputs": [_ROW], "outputs": "label"}).encode(), {}, "outputs"),
        (json.dumps({"inputs": [_ROW], "id": 5}).encode(), {}, "id"),
    ],
)
def test_the_issues_examples_are_400s_naming_the_field(
    http: httpx.Client, body: bytes, headers: dict[str, str], field: str
) -> None:
    """Each of these was '500 model runtime failed' or an answer (null probabilities)."""
    response = http.post("/v2/models/breast-cancer/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    expected = field or "Inference-Header-Content-Length"
    assert expected in response.json()["error"]


def test_a_fuzzed_server_still_answers_correctly(http: httpx.Client) -> None:
    """After all of the above, a well-formed request gets the right answer; one over the row
    cap (MODELPORT_MAX_REQUEST_ROWS=64 here) a 413 saying so."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()

    def body(rows: int) -> dict[str, Any]:
        tensor = {
            "name": "input",
            "datatype": "FP32",
            "shape": [rows, 30],
            "data": data.data[:rows].astype(np.float32).tolist(),
        }
        return {"inputs": [tensor]}

    response = http.post("/v2/models/breast-cancer/infer", json=body(64))
    assert response.status_code == 200
    labels = next(o for o in response.json()["outputs"] if o["name"] == "label")["data"]
    assert (np.array(labels) == data.target[:64]).mean() >= 0.9
    response = http.post("/v2/models/breast-cancer/infer", json=body(65))
    assert response.status_code == 413
    assert "limit of 64 rows per request" in response.json()["error"]
    assert "MODELPORT_MAX_REQUEST_ROWS" in response.json()["error"]
