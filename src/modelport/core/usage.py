"""Units of use, per modality, and how replicas report them to the gateway.

A replica states what a request consumed in the ``x-modelport-units`` response header
(``rows=3`` or ``input_tokens=12,output_tokens=30``), counted with the model's own tokenizer
or decoder; streams report theirs in a final SSE comment (``: modelport-units ...``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["UNITS_HEADER", "UNITS_SSE_PREFIX", "Units", "UsageRecord", "new_event_id"]

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


def new_event_id() -> str:
    """16 random hex characters: the idempotency key of one usage event.

    Made by the gateway, not taken from the client's ``x-request-id`` (clients may reuse
    theirs), so loading a journal twice can never merge two different requests.
    """
    return os.urandom(8).hex()


@dataclass(slots=True)
class UsageRecord:
    """One request as the gateway saw it: who, what, how long, how much.

    ``at`` is the unix time the answer was complete; ``upstream_ms`` is the time upstreams
    spent on it (all attempts), so ``latency_ms - upstream_ms`` is Modelport's own overhead.
    ``customer`` and ``team`` are ``""`` when unknown. Cost is not here: the loader prices an
    event when it stores it, off the hot path.
    """

    request_id: str
    endpoint: str
    revision: str
    key_id: str
    project: str
    customer: str
    status: int
    latency_ms: float
    units: Units = field(default_factory=Units)
    streamed: bool = False
    event_id: str = field(default_factory=new_event_id)
    at: float = field(default_factory=time.time)
    model: str = ""
    model_version: int = 0
    task: str = ""
    team: str = ""
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    judged: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "units"}
        data["units"] = self.units.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageRecord:
        """The inverse of :meth:`to_dict` (and of the journal's JSON line).

        Unknown keys are ignored so that a newer gateway's journal still loads; a missing
        required key or a wrong type raises ``KeyError``/``TypeError``/``ValueError``.
        """
        values = {name: value for name, value in data.items() if name in _RECORD_CHECKS}
        raw_units = values.pop("units", None) or {}
        if not isinstance(raw_units, dict):
            raise TypeError("units is not an object")
        counts = {name: value for name, value in raw_units.items() if name in _UNIT_CHECKS}
        for checks, item in ((_RECORD_CHECKS, values), (_UNIT_CHECKS, counts)):
            for name, value in item.items():
                wanted = checks[name]
                # Exact types: a JSON ``true`` is no number, and a number no boolean.
                if wanted and type(value) not in wanted:
                    allowed = " or ".join(sorted(t.__name__ for t in wanted))
                    raise TypeError(f"{name} is {type(value).__name__}, not {allowed}")
        return cls(units=Units(**counts), **values)


# What a journal line's values must be (JSON has no other way to spell them); a line that
# breaks this is refused whole rather than stopping the loader at the database.
_TYPES: dict[str, frozenset[type]] = {
    "str": frozenset({str}),
    "int": frozenset({int}),
    "float": frozenset({int, float}),
    "float | None": frozenset({int, float, type(None)}),
    "bool": frozenset({bool}),
}


def _checks(cls: type) -> dict[str, frozenset[type]]:
    """Each field of ``cls`` and the JSON types its value may have (none: not checked).
    Worked out once: the loader parses every journal line with them."""
    return {f.name: _TYPES.get(str(f.type), frozenset()) for f in fields(cls)}


_RECORD_CHECKS = _checks(UsageRecord)
_UNIT_CHECKS = _checks(Units)
