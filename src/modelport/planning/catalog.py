"""The hardware catalog: what each CPU and GPU type offers and costs, with the source of every
figure.

The built-in types live in ``hardware.yaml`` next to this module (shipped in the wheel); a user
file in the same format (``MODELPORT_HARDWARE_FILE``) adds types or overrides built-in ones. A
bad user file is a client mistake: ``InvalidRequest`` naming the field and its line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

from modelport.core.errors import InvalidRequest, ValidationFailed
from modelport.core.intent_yaml import FieldPath, read_mapping

__all__ = ["BUILTIN_FILE", "Catalog", "HardwareType", "load_catalog", "parse_catalog"]

BUILTIN_FILE = Path(__file__).with_name("hardware.yaml")
"""The built-in catalog shipped with the package."""

_NUMBERS = ("memory_gb", "bandwidth_gbs", "bf16_tflops", "hourly_usd")
_FIELDS = {"kind", *_NUMBERS, "vcpus", "max_count", "sources", "description"}
_MAX_COUNT = 64  # devices per replica: beyond one node's worth nobody plans with this tool


@dataclass(frozen=True, slots=True)
class HardwareType:
    """One CPU instance or GPU type; prices and figures are per device."""

    name: str
    kind: Literal["cpu", "gpu"]
    memory_gb: float
    """GPU memory (gpu) or the instance's RAM (cpu)."""
    bandwidth_gbs: float
    """Memory bandwidth in GB/s."""
    bf16_tflops: float
    """Dense bf16 TFLOP/s (cpu: an honest small figure)."""
    hourly_usd: float
    """Typical on-demand price of ONE device (cpu: the instance)."""
    vcpus: int = 0
    """cpu only."""
    max_count: int = 8
    """Devices per replica (tensor parallelism)."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Figure name -> URL or citation it came from."""


class Catalog:
    """An immutable map of hardware name -> ``HardwareType``."""

    __slots__ = ("_types",)

    def __init__(self, types: Mapping[str, HardwareType]) -> None:
        self._types: Mapping[str, HardwareType] = MappingProxyType(dict(types))

    def get(self, name: str) -> HardwareType:
        """The type called ``name``; an unknown name is ``InvalidRequest`` naming the known
        ones (param ``resources.hardware``)."""
        found = self._types.get(name)
        if found is None:
            known = ", ".join(self.names())
            raise InvalidRequest(
                f"unknown hardware type {name!r}: known types are {known} (add your own in "
                "the file MODELPORT_HARDWARE_FILE names)",
                param="resources.hardware",
            )
        return found

    def names(self) -> list[str]:
        """Every type's name, in catalog order."""
        return list(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[HardwareType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)


def load_catalog(extra: Path | None = None) -> Catalog:
    """The built-in catalog, with ``extra`` (a user file in the same format) adding types or
    overriding built-in ones. A missing or bad ``extra`` is ``InvalidRequest`` naming the field
    and line."""
    types = dict(_builtin_types())
    if extra is not None:
        try:
            text = extra.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(
                f"cannot read the hardware file {str(extra)!r}: {exc}", param="hardware_file"
            ) from None
        types.update(parse_catalog(text, extra.name))
    return Catalog(types)


@cache
def _builtin_types() -> Mapping[str, HardwareType]:
    # Parsed once per process: the file ships with the package and a parse takes ~50 ms,
    # which every plan and every environment write would otherwise pay.
    types = parse_catalog(BUILTIN_FILE.read_text(encoding="utf-8"), BUILTIN_FILE.name)
    return MappingProxyType(types)


def parse_catalog(text: str, filename: str) -> dict[str, HardwareType]:
    """The hardware types a catalog file defines (``hardware: {name: {fields}}``)."""
    try:
        data, lines, problems = read_mapping(text, filename, needs="a `hardware:` mapping")
    except ValidationFailed as exc:
        raise InvalidRequest(exc.message, param="hardware_file", **exc.details) from None
    if problems:
        _refuse(filename, problems[0][0], problems[0][1], problems[0][2])
    for key in data:
        if key != "hardware":
            _refuse(filename, str(key), _line(lines, (key,)), "unknown field: expected `hardware`")
    entries = data.get("hardware")
    if not isinstance(entries, dict) or not entries:
        _refuse(filename, "hardware", _line(lines, ("hardware",)), "must be a non-empty mapping")
    return {
        str(name): _hardware(str(name), spec, filename, lines) for name, spec in entries.items()
    }


def _hardware(name: str, spec: Any, filename: str, lines: dict[FieldPath, int]) -> HardwareType:
    where: FieldPath = ("hardware", name)
    path = f"hardware.{name}"
    line = _line(lines, where)
    if not name or len(name) > 40 or not all(c.isalnum() or c in "-_." for c in name):
        _refuse(filename, path, line, "a name is 1-40 letters, digits, '-', '_' or '.'")
    if not isinstance(spec, dict):
        _refuse(filename, path, line, "must be a mapping of fields")
    for key in spec:
        if key not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            _refuse(
                filename,
                f"{path}.{key}",
                _line(lines, (*where, key)),
                f"unknown field (known: {known})",
            )
    kind = spec.get("kind")
    if kind not in ("cpu", "gpu"):
        _refuse(filename, f"{path}.kind", _line(lines, (*where, "kind")), "must be cpu or gpu")
    numbers: dict[str, float] = {}
    for key in _NUMBERS:
        value = spec.get(key)
        at = _line(lines, (*where, key))
        if isinstance(value, bool) or not isinstance(value, int | float):
            _refuse(filename, f"{path}.{key}", at, "must be a number")
        if not math.isfinite(value) or value <= 0 or value > 1e7:
            _refuse(filename, f"{path}.{key}", at, "must be a positive number")
        numbers[key] = float(value)
    counts: dict[str, int] = {}
    for key, default, low in (("vcpus", 0, 0), ("max_count", 8, 1)):
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_COUNT:
            where_key = _line(lines, (*where, key))
            _refuse(filename, f"{path}.{key}", where_key, f"must be an integer {low}-{_MAX_COUNT}")
        counts[key] = value
    if kind == "cpu" and counts["vcpus"] < 1:
        _refuse(
            filename,
            f"{path}.vcpus",
            _line(lines, (*where, "vcpus")),
            "a cpu type needs vcpus >= 1",
        )
    sources = spec.get("sources", {})
    if not isinstance(sources, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
    ):
        at = _line(lines, (*where, "sources"))
        _refuse(filename, f"{path}.sources", at, "must map figure names to text (a URL)")
    return HardwareType(
        name=name,
        kind=kind,
        memory_gb=numbers["memory_gb"],
        bandwidth_gbs=numbers["bandwidth_gbs"],
        bf16_tflops=numbers["bf16_tflops"],
        hourly_usd=numbers["hourly_usd"],
        vcpus=counts["vcpus"],
        max_count=counts["max_count"],
        sources=MappingProxyType(dict(sources)),
    )


def _line(lines: dict[FieldPath, int], path: FieldPath) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _refuse(filename: str, field_path: str, line: int, message: str) -> NoReturn:
    raise InvalidRequest(
        f"{filename}: {field_path} (line {line}): {message}",
        param=field_path,
        line=line,
    )
