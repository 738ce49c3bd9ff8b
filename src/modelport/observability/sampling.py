"""The gateway's drift sampler, and the decoding of what it sampled.

On the request path the gateway pays one ``random()`` per V2 call and, for the sampled ones,
one deque append of a tuple of references to bytes it already holds (the request and the
response body). The queue is bounded: when the scorer falls behind, new samples are dropped
and counted, never waited for. Decoding (JSON or binary tensors) happens in the drift
scorer's thread, never on the event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import orjson

from modelport.core.signature import DATATYPES
from modelport.observability.drift import Group, Kind, Profile, image_statistics

__all__ = [
    "Sample",
    "Sampler",
    "decode_tensors",
    "features_of",
    "header_length",
    "predicted_classes",
]

log = logging.getLogger("modelport.drift")

# Numeric V2 datatypes only: BYTES tensors (text, encoded images) are not profiled.
_NUMERIC = {name: np.dtype(dtype) for name, dtype in DATATYPES.items() if name != "BYTES"}
_HEADER = b"inference-header-content-length"


class Sample(NamedTuple):
    """One sampled V2 call, as the gateway had it: references, not copies."""

    endpoint: str
    revision: str
    request: bytes
    request_header: bytes | None  # Inference-Header-Content-Length, as sent
    response: bytes
    response_header: bytes | None


class Sampler:
    """A bounded queue of sampled calls. The gateway draws ``random() < rate`` itself, so a
    call that is not sampled costs one comparison; ``offer`` is a few additions and one
    append. The drift scorer's thread drains it (deque appends and pops are atomic).

    Bounded in samples and in bytes: the bodies stay alive while queued. The byte count is
    two counters with one writer each (the loop adds, the draining thread subtracts), so
    neither side needs a lock."""

    def __init__(
        self, rate: float, capacity: int = 1024, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.rate = rate
        self.dropped = 0
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes_in = 0  # written on the event loop only
        self._bytes_out = 0  # written by the draining thread only
        self._queue: deque[Sample] = deque()

    def offer(self, sample: Sample) -> None:
        """Queue one sampled call, or drop it when the queue is full."""
        size = len(sample.request) + len(sample.response)
        queued = self._bytes_in - self._bytes_out
        if len(self._queue) < self._capacity and queued + size <= self._max_bytes:
            self._bytes_in += size
            self._queue.append(sample)
        else:
            self.dropped += 1

    def drain(self, limit: int = 10_000) -> list[Sample]:
        """Take up to ``limit`` queued samples, oldest first."""
        taken: list[Sample] = []
        queue = self._queue
        while queue and len(taken) < limit:
            sample = queue.popleft()
            self._bytes_out += len(sample.request) + len(sample.response)
            taken.append(sample)
        return taken


def header_length(headers: Any) -> bytes | None:
    """``Inference-Header-Content-Length`` among ``(name, value)`` header pairs, if sent."""
    for name, value in headers:
        if name.lower() == _HEADER:
            return bytes(value)
    return None


def decode_tensors(body: bytes, header: bytes | None, key: str) -> dict[str, np.ndarray]:
    """The tensors listed under ``key`` (``inputs`` or ``outputs``) of a V2 body, JSON or
    binary extension. Numeric tensors only; anything malformed gives ``{}``: a sample is
    evidence, not a request to answer, and the replica already judged the real one."""
    try:
        split = int(header) if header else len(body)
        payload = orjson.loads(body[:split])
        items = payload.get(key) if isinstance(payload, Mapping) else None
        if not isinstance(items, list):
            return {}
        tensors: dict[str, np.ndarray] = {}
        offset = split
        for item in items:
            dtype = _NUMERIC.get(item.get("datatype", ""))
            shape = [int(n) for n in item.get("shape", ())]
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                chunk = body[offset : offset + int(size)]
                offset += int(size)
                if dtype is not None:
                    tensors[item["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
            elif dtype is not None and "data" in item:
                tensors[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(shape)
        return tensors
    except (ValueError, TypeError, KeyError, AttributeError, orjson.JSONDecodeError):
        return {}


def predicted_classes(outputs: Mapping[str, np.ndarray]) -> list[str] | None:
    """The class each row was given: the ``label`` output, else the first integer output of
    one value per row, else the arg-max of the first float output of several per row."""
    label = outputs.get("label")
    if label is not None and label.ndim and label.dtype.kind in "iub":
        return [str(v) for v in label.reshape(len(label), -1)[:, 0].tolist()]
    for array in outputs.values():
        if array.dtype.kind in "iu" and array.ndim in (1, 2) and array.size == len(array):
            return [str(v) for v in array.reshape(-1).tolist()]
    for array in outputs.values():
        if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1:
            return [str(v) for v in array.argmax(axis=1).tolist()]
    return None


Feature = tuple[str, list[Any], Group, Kind]  # name, values, group, kind


def features_of(profile: Profile | None, sample: Sample) -> list[Feature]:
    """Decode one sampled call into feature values: the profiled input columns (or image
    intensity statistics) and the predicted classes. Runs in the scorer's thread."""
    found: list[Feature] = []
    inputs = decode_tensors(sample.request, sample.request_header, "inputs")
    if profile is not None and profile.kind in ("tabular", "image") and inputs:
        columns = profile.columns
        if profile.tensor is not None:
            array = inputs.get(profile.tensor)
            if array is not None and array.ndim == 2 and array.shape[1] == len(columns):
                if profile.kind == "image":
                    means, stds = image_statistics(array)
                    found.append(("image_mean", means.tolist(), "input", "numeric"))
                    found.append(("image_std", stds.tolist(), "input", "numeric"))
                else:
                    matrix = array.astype(np.float64)
                    for i, column in enumerate(columns):
                        found.append((column, matrix[:, i].tolist(), "input", "numeric"))
        else:
            for column in columns:
                if (values := inputs.get(column)) is not None:
                    flat = values.astype(np.float64).ravel().tolist()
                    found.append((column, flat, "input", "numeric"))
    outputs = decode_tensors(sample.response, sample.response_header, "outputs")
    classes = predicted_classes(outputs)
    if classes is not None:
        found.append(("predicted_class", classes, "output", "categorical"))
    return found
