"""Units of use, per modality, and how replicas report them to the gateway.

A replica states what a request consumed in the ``x-modelport-units`` response header
(``rows=3`` or ``input_tokens=12,output_tokens=30``), counted with the model's own tokenizer
or decoder; streams report theirs in a final SSE comment (``: modelport-units ...``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["UNITS_HEADER", "UNITS_SSE_PREFIX", "Units", "UsageRecord"]

UNITS_HEADER = b"x-modelport-units"
UNITS_SSE_PREFIX = b": modelport-units "
_NAMES = ("input_tokens", "output_tokens", "audio_seconds", "images", "rows")


@dataclass(slots=True)
class Units:
    """What one request consumed. ``requests`` is always 1 for one call."""

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    images: int = 0
    rows: int = 0

    def encode(self) -> bytes:
        parts = [f"{name}={getattr(self, name)}" for name in _NAMES if getattr(self, name)]
        return ",".join(parts).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Units:
        units = cls()
        if not raw:
            return units
        for part in raw.split(b","):
            name, _, value = part.decode().partition("=")
            if name in _NAMES:
                setattr(units, name, float(value) if name == "audio_seconds" else int(value))
        return units

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class UsageRecord:
    """One request as the gateway saw it: who, what, how long, how much."""

    request_id: str
    endpoint: str
    revision: str
    key_id: str
    project: str
    customer: str | None
    status: int
    latency_ms: float
    units: Units = field(default_factory=Units)
    streamed: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "units"}
        data["units"] = self.units.to_dict()
        return data
