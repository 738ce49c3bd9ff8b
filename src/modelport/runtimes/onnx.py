"""ONNX models through onnxruntime (CPU)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelport.core.errors import InvalidRequest, PayloadTooLarge
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


_INVERT = {"auto": "auto", "true": "true", "false": "false", True: "true", False: "false"}


def _invert_option(options: dict[str, Any]) -> str:
    value = options.get("invert", "false")
    mode = _INVERT.get(value) if isinstance(value, str | bool) else None
    if mode is None:
        raise InvalidRequest(
            f"runtime option invert must be 'auto', 'true' or 'false', got {value!r}",
            field="runtime_options.invert",
        )
    return mode


def _light_background(grey: np.ndarray) -> bool:
    """Whether an image is dark ink on light paper: its border is mostly light."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(border.mean()) > 127.5


@dataclass(frozen=True, slots=True)
class _ImageInput:
    input: str
    feeds: str
    width: int
    height: int
    scale: float
    invert: str  # "false", "true" or "auto" (see OnnxRuntime)
    max_pixels: int

    @classmethod
    def parse(
        cls, raw: Any, options: dict[str, Any], inputs: list[TensorSpec], max_pixels: int
    ) -> _ImageInput:
        try:
            width, height = (int(v) for v in raw.get("size", (8, 8)))
            config = cls(
                input=str(raw.get("input", "image")),
                feeds=str(raw.get("feeds") or inputs[0].name),
                width=width,
                height=height,
                scale=float(raw.get("scale", 1.0)),
                invert=_invert_option(options),
                max_pixels=max_pixels,
            )
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise InvalidRequest(f"invalid runtime option 'image': {exc}") from exc
        if config.feeds not in {spec.name for spec in inputs}:
            raise InvalidRequest(
                f"runtime option image.feeds: the model has no input {config.feeds!r}"
            )
        return config

    def decode(self, images: np.ndarray) -> np.ndarray:
        """Encoded images -> FP32 [N, width*height], each pixel's brightness -> 0..scale."""
        rows = [self._pixels(index, item) for index, item in enumerate(images.ravel())]
        if not rows:  # a batch of no images is an empty batch, not a failure
            return np.empty((0, self.width * self.height), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    def _too_large(self, index: int, pixels: int | None) -> PayloadTooLarge:
        size = f"has {pixels} pixels, " if pixels is not None else "is "
        return PayloadTooLarge(
            f"image {index} {size}over the limit of {self.max_pixels} pixels per image: send a "
            "smaller image, or raise the server setting MODELPORT_MAX_IMAGE_PIXELS",
            param=f"{self.input}[{index}]",
            limit=self.max_pixels,
        )

    def _pixels(self, index: int, item: Any) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        raw = item if isinstance(item, bytes) else str(item).encode()
        try:
            data = base64.b64decode(raw, validate=True)
            # Pillow warns past 89M pixels and refuses past twice that; this runtime has its
            # own, lower cap, checked from the header before a single pixel is decoded.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
            with image:
                width, height = image.size
                if width * height > self.max_pixels:
                    raise self._too_large(index, width * height)
                grey = np.asarray(image.convert("L"), dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise self._too_large(index, None) from exc
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidRequest(
                f"image {index} is not a base64-encoded PNG or JPEG image: {exc}",
                param=f"{self.input}[{index}]",
            ) from exc
        if grey.size == 0:
            raise InvalidRequest(f"image {index} has no pixels", param=f"{self.input}[{index}]")
        invert = self.invert == "true" or (self.invert == "auto" and _light_background(grey))
        small = Image.fromarray(255 - grey if invert else grey).resize(
            (self.width, self.height), Image.Resampling.BILINEAR
        )
        return np.asarray(small, dtype=np.float32).ravel() * (self.scale / 255.0)


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
    """Runs ``*.onnx``; option ``threads`` sets onnxruntime's intra-op threads (default 1).

    Option ``image`` (for vision models) adds an input of encoded images that the runtime
    decodes for the model: ``{"input": "image", "feeds": "input", "size": [8, 8],
    "scale": 16.0}`` takes base64 PNG/JPEG images in a BYTES input named ``image``, turns them
    grey, scales them to 8x8, maps each pixel's brightness 0..255 to 0..16 and feeds ``input``.

    Option ``invert`` says how an image's polarity meets the model's: ``false`` (default)
    keeps it (bright is high, as in scikit-learn's digits), ``true`` inverts every image, and
    ``auto`` inverts images whose border is light (dark ink on light paper).
    """

    _session: ort.InferenceSession

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        session = _session(find_model_file(artifact_dir, (".onnx",), options), options)
        inputs = [_spec(arg) for arg in session.get_inputs()]
        if image := options.get("image"):
            config = _ImageInput.parse(image, options, inputs, 1)
            inputs = [spec.model_copy(update={"optional": True}) for spec in inputs]
            inputs.append(
                TensorSpec(name=config.input, datatype="BYTES", shape=[-1], optional=True)
            )
        return Signature(inputs=inputs, outputs=[_spec(arg) for arg in session.get_outputs()])

    async def load(self) -> None:
        options = self.settings.options
        self._session = _session(
            find_model_file(self.settings.artifact_dir, (".onnx",), options), options
        )
        self._outputs = [arg.name for arg in self._session.get_outputs()]
        image = options.get("image")
        self._image = (
            _ImageInput.parse(
                image, options, self.settings.signature.inputs, self.settings.max_image_pixels
            )
            if image
            else None
        )

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._image is not None and self._image.input in inputs:
            inputs = {self._image.feeds: self._image.decode(inputs[self._image.input])}
        # Small tabular models answer in microseconds: calling inline beats a thread hop.
        results = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, (np.asarray(r) for r in results), strict=True))
