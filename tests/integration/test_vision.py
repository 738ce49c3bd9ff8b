"""The digits classifier takes pixels or PNG images over V2, with tritonclient unchanged.

Images are decoded in the model's own convention (bright ink on dark, as scikit-learn's
digits are); the demo's ``invert: auto`` also reads dark ink on light paper, and a revision's
``invert`` option forces either way.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from modelport.client import Client
from modelport.runtimes.base import RuntimeSettings
from modelport.runtimes.onnx import OnnxRuntime
from tests.integration.conftest import RunningServer, demo_server

pytestmark = pytest.mark.integration

_MAX_IMAGE_PIXELS = 128 * 128


def _png(image: np.ndarray, *, bright_ink: bool) -> bytes:
    """An 8x8 digit (0-16 ink) drawn as 32x32 pixels, base64 PNG: bright ink on black as in
    the training data, or dark ink on white paper."""
    ink = image * 255 / 16
    pixels = (ink if bright_ink else 255 - ink).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue())


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """100 digits the demo model did not train on (the demo's own split)."""
    digits = load_digits()
    _, images, _, target = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return images[:100], target[:100]


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    env = {"MODELPORT_DEMO_MODELS": "digits", "MODELPORT_MAX_IMAGE_PIXELS": str(_MAX_IMAGE_PIXELS)}
    with demo_server(tmp_path_factory.mktemp("vision") / "home", "digits", env=env) as server:
        with server.client() as admin:
            key: str = admin.create_key("default", "vision")["key"]
        yield server, key


@pytest.fixture(scope="module")
def admin(digits_server: tuple[RunningServer, str]) -> Iterator[Client]:
    with digits_server[0].client() as client:
        yield client


@pytest.fixture(scope="module")
def triton_client(
    digits_server: tuple[RunningServer, str],
) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(digits_server[0].url.removeprefix("http://"))
    yield client
    client.close()


def _images(images: np.ndarray, *, bright_ink: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    encoded = [_png(image, bright_ink=bright_ink) for image in images]
    tensor.set_data_from_numpy(np.array(encoded, dtype=object))
    return tensor


@pytest.mark.parametrize("bright_ink", [True, False], ids=["bright-on-dark", "dark-on-light"])
def test_pngs_classify_in_either_polarity(
    triton_client, digits_server, held_out, bright_ink: bool
) -> None:
    """Bright ink on dark scored ~0% when every image was inverted."""
    images, target = held_out
    headers = {"Authorization": f"Bearer {digits_server[1]}"}
    result = triton_client.infer(
        "digits", [_images(images, bright_ink=bright_ink)], headers=headers
    )
    accuracy = (result.as_numpy("label") == target).mean()
    assert accuracy >= 0.8, f"{accuracy:.0%} of 100 held-out digits"


def test_pixels_and_usage(triton_client, digits_server, held_out, admin: Client) -> None:
    images, target = held_out
    headers = {"Authorization": f"Bearer {digits_server[1]}", "x-request-id": "digits-png"}
    pixels = triton.InferInput("input", [40, 64], "FP32")
    pixels.set_data_from_numpy(images[:40].reshape(40, 64).astype(np.float32))
    by_pixels = triton_client.infer("digits", [pixels], headers=dict(headers))
    assert (by_pixels.as_numpy("label") == target[:40]).mean() >= 0.9

    by_images = triton_client.infer(
        "digits", [_images(images[:40], bright_ink=True)], headers=dict(headers)
    )
    assert by_images.get_response()["model_name"] == "digits"
    record = next(r for r in admin.get_usage() if r["request_id"] == "digits-png")
    assert record["units"]["images"] == 40 and record["units"]["rows"] == 40


def test_bad_images_and_ambiguous_inputs(digits_server) -> None:
    server, key = digits_server
    headers = {"Authorization": f"Bearer {key}"}
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
                "data": [_png(np.zeros((8, 8)), bright_ink=True).decode()],
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


def test_an_image_over_the_pixel_limit_is_413(digits_server) -> None:
    server, key = digits_server
    buffer = io.BytesIO()
    Image.new("L", (129, 128)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}]}
    response = httpx.post(
        f"{server.url}/v2/models/digits/infer",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 413
    message = response.json()["error"]
    assert f"over the limit of {_MAX_IMAGE_PIXELS} pixels" in message
    assert "MODELPORT_MAX_IMAGE_PIXELS" in message


def test_a_revision_forces_the_polarity(
    digits_server, held_out, admin: Client, triton_client
) -> None:
    """invert: true (a revision's option, over the model's auto) inverts every image."""
    images, target = held_out
    intent = "endpoint: digits-inverted\ntask: vision\nmodel: digits\nruntime_options:\n"
    admin.wait_applied(admin.apply(intent + "  invert: 'true'\n"), timeout=180)
    headers = {"Authorization": f"Bearer {digits_server[1]}"}

    def accuracy(bright_ink: bool) -> float:
        tensor = _images(images, bright_ink=bright_ink)
        result = triton_client.infer("digits-inverted", [tensor], headers=headers)
        return float((result.as_numpy("label") == target).mean())

    assert accuracy(bright_ink=False) >= 0.8
    assert accuracy(bright_ink=True) <= 0.3


@pytest.mark.parametrize(("invert", "bright_ink"), [("false", True), ("true", False)])
async def test_the_runtime_option_alone(
    digits_server, held_out, invert: str, bright_ink: bool
) -> None:
    """The runtime without the demo's auto: false keeps brightness, true inverts."""
    artifact: Path = digits_server[0].home / "demo" / "digits"
    image = {"input": "image", "feeds": "input", "size": [8, 8], "scale": 16.0}
    options = {"image": image, "invert": invert, "file": "model.onnx"}
    runtime = OnnxRuntime(
        RuntimeSettings(
            name="digits",
            artifact_dir=artifact,
            signature=OnnxRuntime.inspect(artifact, options),
            options=options,
        )
    )
    await runtime.load()
    images, target = held_out
    encoded = np.array([_png(i, bright_ink=bright_ink) for i in images], dtype=object)
    labels = (await runtime.predict({"image": encoded}))["label"]
    assert (labels == target).mean() >= 0.8
