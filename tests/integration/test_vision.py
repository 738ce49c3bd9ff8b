"""The digits classifier takes pixels or PNG images over V2, with tritonclient unchanged."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from sklearn.datasets import load_digits

from modelport.client import Client
from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration


def _png(image: np.ndarray) -> bytes:
    """An 8x8 digit (0-16 ink) drawn as dark ink on white, 32x32 pixels, base64 PNG."""
    pixels = (255 - image * 255 / 16).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue())


@pytest.fixture(scope="module")
def triton_client(server: RunningServer):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def test_pixels_and_png_images(triton_client, api_key: str, admin: Client) -> None:
    digits = load_digits()
    headers = {"Authorization": f"Bearer {api_key}", "x-request-id": "digits-png"}

    pixels = triton.InferInput("input", [40, 64], "FP32")
    pixels.set_data_from_numpy(digits.data[:40].astype(np.float32))
    by_pixels = triton_client.infer("digits", [pixels], headers=dict(headers))
    assert (by_pixels.as_numpy("label") == digits.target[:40]).mean() >= 0.9

    images = triton.InferInput("image", [40], "BYTES")
    images.set_data_from_numpy(np.array([_png(img) for img in digits.images[:40]], dtype=object))
    by_images = triton_client.infer("digits", [images], headers=dict(headers))
    assert (by_images.as_numpy("label") == digits.target[:40]).mean() >= 0.85
    assert by_images.get_response()["model_name"] == "digits"

    record = next(r for r in admin.get_usage() if r["request_id"] == "digits-png")
    assert record["units"]["images"] == 40 and record["units"]["rows"] == 40


def test_bad_images_and_ambiguous_inputs(server: RunningServer, api_key: str) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{server.url}/v2/models/digits/infer"
    not_png = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}]
    }
    response = httpx.post(url, json=not_png, headers=headers)
    assert response.status_code == 400
    assert "image 0 is not a base64-encoded PNG or JPEG" in response.json()["error"]
    both = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [_png(np.zeros((8, 8))).decode()],
            },
            {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64},
        ]
    }
    response = httpx.post(url, json=both, headers=headers)
    assert response.status_code == 400
    assert "exactly one of the inputs" in response.json()["error"]
    ok = httpx.post(url, json={"inputs": [both["inputs"][0]]}, headers=headers)
    assert ok.status_code == 200
    assert ok.headers["x-modelport-revision"] == "r1"
