"""Reading an LLM's shape from a GGUF file's header, without reading its weights.

GGUF (llama.cpp's format, versions 2 and 3, little-endian): magic ``GGUF``, version, tensor
count, metadata count, typed key/value metadata (``general.architecture``,
``<arch>.block_count``, ...), then tensor infos (name, shape, type, offset); the weights follow.
Only the header is read (through ``mmap``, so a tokenizer of 150,000 strings is skipped without
being copied), and every count and length is bounded by what the file can hold, so a hostile
file cannot make this allocate much or loop long.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from modelport.core.errors import InvalidRequest
from modelport.planning.llm import LlmModel

__all__ = ["MAX_METADATA", "MAX_TENSORS", "read_llm_model"]

MAX_METADATA = 100_000
"""Metadata entries: real files have 20-50."""
MAX_TENSORS = 1_000_000
"""Tensor infos: a 405B model has ~1,300."""
_MAX_KEY = 65_535
_MAX_DIMS = 8
_MAX_DEPTH = 2  # arrays of arrays (nothing nests deeper in practice)
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length, dimensions, type, offset
_MIN_METADATA = 8 + 4  # key length, value type

_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

# general.file_type -> bytes per parameter, for a file whose tensor infos give no count.
_FILE_TYPE_BYTES = {0: 4.0, 1: 2.0, 2: 0.5625, 3: 0.625, 7: 1.0625, 8: 0.6875, 9: 0.75}


class _Truncated(Exception):
    pass


class _Reader:
    """Bounds-checked little-endian reads over a memory map."""

    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> int:
        start = self.pos
        if size < 0 or start + size > len(self.data):
            raise _Truncated
        self.pos = start + size
        return start

    def unpack(self, fmt: struct.Struct) -> Any:
        return fmt.unpack_from(self.data, self.take(fmt.size))[0]

    def u32(self) -> int:
        value: int = self.unpack(_U32)
        return value

    def u64(self) -> int:
        value: int = self.unpack(_U64)
        return value

    def string(self, limit: int | None = None) -> str:
        length = self.u64()
        if limit is not None and length > limit:
            raise ValueError(f"a string of {length} bytes where at most {limit} are expected")
        start = self.take(length)
        return bytes(self.data[start : start + length]).decode("utf-8", "replace")

    def skip_string(self) -> None:
        self.take(self.u64())


def read_llm_model(path: Path) -> LlmModel:
    """The ``LlmModel`` a GGUF file describes (header metadata only; no weights read).

    A file that is not GGUF, is truncated, or whose header is absurd or lacks the fields
    sizing needs is ``InvalidRequest`` (param ``model``) saying what is wrong."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                _refuse(path, "is too short to be a GGUF file")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(path, data, size)
    except OSError as exc:
        _refuse(path, f"cannot be read: {exc.strerror or exc}")


def _parse(path: Path, data: mmap.mmap, size: int) -> LlmModel:
    reader = _Reader(data)
    try:
        if bytes(data[:4]) != b"GGUF":
            _refuse(path, "is not a GGUF file (it does not start with 'GGUF')")
        reader.take(4)
        version = reader.u32()
        if version not in (2, 3):
            _refuse(path, f"is GGUF version {version}; versions 2 and 3 are supported")
        tensor_count, metadata_count = reader.u64(), reader.u64()
        if tensor_count > MAX_TENSORS or metadata_count > MAX_METADATA:
            _refuse(path, f"claims {tensor_count} tensors and {metadata_count} metadata entries")
        # Each entry takes at least this many bytes: a count the file cannot hold is refused
        # before a loop runs over it.
        if tensor_count * _MIN_TENSOR_INFO + metadata_count * _MIN_METADATA > size:
            raise _Truncated
        metadata: dict[str, Any] = {}
        for _ in range(metadata_count):
            key = reader.string(_MAX_KEY)
            metadata[key] = _value(reader, reader.u32(), 0)
        params = 0
        for _ in range(tensor_count):
            reader.skip_string()
            dims = reader.u32()
            if dims > _MAX_DIMS:
                _refuse(path, f"has a tensor of {dims} dimensions")
            count = 1
            for _ in range(dims):
                count *= reader.u64()
            reader.take(4 + 8)  # type, offset
            params += count
    except _Truncated:
        _refuse(path, "is truncated: its header ends before its counts say")
    except (ValueError, UnicodeError) as exc:
        _refuse(path, f"has a malformed header: {exc}")
    return _model(path, metadata, params, size - reader.pos)


def _value(reader: _Reader, kind: int, depth: int) -> Any:
    """One metadata value; arrays of scalars are kept (they are small) only up to 64 items,
    longer ones (tokenizer vocabularies) are skipped and stand as their length."""
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return reader.unpack(scalar)
    if kind == _STRING:
        return reader.string(1 << 20)
    if kind == _ARRAY:
        if depth >= _MAX_DEPTH:
            raise ValueError("arrays nest too deeply")
        item_kind, count = reader.u32(), reader.u64()
        item = _SCALARS.get(item_kind)
        if item is not None:
            start = reader.take(item.size * count)  # bounded by the file: no loop needed
            if count > 64:
                return count
            return [item.unpack_from(reader.data, start + i * item.size)[0] for i in range(count)]
        skip: Callable[[], object]
        if item_kind == _STRING:
            skip = reader.skip_string
        else:

            def skip() -> object:
                return _value(reader, item_kind, depth + 1)

        # A string is at least its 8-byte length, an array its 12-byte type and count.
        if count * (8 if item_kind == _STRING else 12) > len(reader.data) - reader.pos:
            raise _Truncated
        for _ in range(count):
            skip()
        return count
    raise ValueError(f"unknown metadata value type {kind}")


def _model(path: Path, metadata: dict[str, Any], params: int, weight_bytes: int) -> LlmModel:
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        _refuse(path, "has no general.architecture in its metadata")

    def number(name: str, default: int | None = None) -> int:
        value = metadata.get(f"{arch}.{name}", default)
        if isinstance(value, list) and value:  # per-layer (e.g. head_count_kv): the largest
            value = max(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            _refuse(path, f"has no usable {arch}.{name} in its metadata")
        return value

    layers = number("block_count")
    heads = number("attention.head_count")
    kv_heads = number("attention.head_count_kv", heads)
    embedding = number("embedding_length")
    head_dim = number("attention.key_length", max(1, embedding // heads))
    context = number("context_length")
    if params > 0:
        bytes_per_param = max(weight_bytes, 1) / params
    else:
        # No tensor infos: guess the count from the file size and the declared quantisation.
        file_type = metadata.get("general.file_type")
        bytes_per_param = (
            _FILE_TYPE_BYTES.get(file_type, 2.0) if isinstance(file_type, int) else 2.0
        )
        params = int(weight_bytes / bytes_per_param)
    return LlmModel(
        params_b=params / 1e9,
        bytes_per_param=bytes_per_param,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        context=context,
    )


def _refuse(path: Path, what: str) -> NoReturn:
    raise InvalidRequest(f"the model file {path.name} {what}", param="model")
