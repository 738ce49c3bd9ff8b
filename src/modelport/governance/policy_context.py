"""What a policy's rules may name: the context schema, environment kinds, artifact formats.

``CONTEXT_SCHEMA`` is built from the real models (the ``Intent`` pydantic model for
``intent.*``), so a field added to the intent file is at once a field policies may name.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel

from modelport.core.intent import Intent

__all__ = [
    "ARTIFACT_FORMATS",
    "CONTEXT_SCHEMA",
    "ENVIRONMENT_KINDS",
    "MODES",
    "STAGES",
    "ContextSchema",
    "Mode",
    "SchemaField",
    "Stage",
    "artifact_format",
    "environment_context",
    "environment_kind",
]

Stage = Literal["plan", "apply", "promote", "key_create"]
Mode = Literal["enforce", "audit"]
STAGES: tuple[Stage, ...] = ("plan", "apply", "promote", "key_create")
MODES: tuple[Mode, ...] = ("enforce", "audit")

# An intent's ``environment`` names a stored environment (control/environments.py), whose
# kind and sensitivities the context carries. This table only serves where no stored row is at
# hand (a policy tested against an environment that does not exist yet): an unknown name counts
# as shared, the cautious reading, so that confidential data needs an environment known to be
# dedicated or isolated.
ENVIRONMENT_KINDS: dict[str, str] = {
    "sandbox": "shared",
    "dev": "shared",
    "development": "shared",
    "test": "shared",
    "staging": "shared",
    "production": "dedicated",
    "isolated": "isolated",
}
_KINDS = ("shared", "dedicated", "isolated")
_STRATEGIES = ("immediate", "canary", "blue-green", "shadow")


def environment_kind(name: str) -> str:
    """The kind of a named environment: ``shared``, ``dedicated`` or ``isolated``."""
    return ENVIRONMENT_KINDS.get(name, "shared")


def environment_context(
    name: str,
    *,
    kind: str | None = None,
    sensitivities: Sequence[str] | None = None,
    sensitivity: str | None = None,
) -> dict[str, Any]:
    """What rules see as ``environment``: its ``name`` and ``kind`` (the stored kind, else
    :func:`environment_kind`'s reading of the name) and, for a stored environment, the
    ``sensitivities`` it accepts and whether they include the intent's ``sensitivity``
    (``accepts_sensitivity``)."""
    context: dict[str, Any] = {"name": name, "kind": kind or environment_kind(name)}
    if sensitivities is not None:
        context["sensitivities"] = list(sensitivities)
        if sensitivity is not None:
            context["accepts_sensitivity"] = sensitivity in sensitivities
    return context


# What a version's artifact is, from its runtime and its files' suffixes. Loading pickle,
# joblib or a PyTorch checkpoint runs code; onnx, gguf and safetensors are data.
ARTIFACT_FORMATS = (
    "pickle",
    "joblib",
    "pytorch",
    "onnx",
    "gguf",
    "safetensors",
    "python",
    "remote",
    "unknown",
)
_SUFFIX_FORMATS = {
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "joblib",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
    ".onnx": "onnx",
    ".gguf": "gguf",
    ".safetensors": "safetensors",
}
# When several are present, the riskiest names the artifact: a safetensors model that also
# ships a pytorch_model.bin may be loaded from the .bin.
_RISK_ORDER = ("pickle", "joblib", "pytorch", "safetensors", "onnx", "gguf")
_RUNTIME_FORMATS = {"python": "python", "openai-upstream": "remote", "v2-upstream": "remote"}


def artifact_format(runtime: str, file_names: Iterable[str]) -> str:
    """One of ``ARTIFACT_FORMATS`` for a version of ``runtime`` whose artifact holds these
    files (names or relative paths)."""
    if runtime in _RUNTIME_FORMATS:
        return _RUNTIME_FORMATS[runtime]
    found = set()
    for name in file_names:
        dot = name.rfind(".")
        if dot >= 0 and (kind := _SUFFIX_FORMATS.get(name[dot:].lower())) is not None:
            found.add(kind)
    return next((kind for kind in _RISK_ORDER if kind in found), "unknown")


# --- the context schema ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemaField:
    choices: tuple[str, ...] | None = None  # the values it can take, to catch typos in operands
    free: bool = False  # a free-form mapping: any key below it is allowed


@dataclass(frozen=True, slots=True)
class ContextSchema:
    """Every field path a rule may name, and at which stages each root is known."""

    fields: Mapping[str, SchemaField]
    roots: Mapping[str, frozenset[str]]  # root -> stages that supply it

    def lookup(self, path: str) -> SchemaField | None:
        """The field at ``path``, or ``None`` if no such field exists."""
        if path in self.fields:
            return self.fields[path]
        parts = path.split(".")
        for end in range(len(parts) - 1, 0, -1):
            known = self.fields.get(".".join(parts[:end]))
            if known is not None:
                return SchemaField() if known.free and all(parts[end:]) else None
        return None

    def near(self, path: str) -> list[str]:
        """Known paths that share the unknown one's parent, to say what was meant."""
        parent = path.rsplit(".", 1)[0]
        return sorted(p for p in self.fields if p.rsplit(".", 1)[0] == parent)[:12]


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation allows, Optional and Annotated taken apart."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _model_fields(model: type[BaseModel], prefix: str, out: dict[str, SchemaField]) -> None:
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        kinds = [t for t in _unwrap(info.annotation) if t is not type(None)]
        nested = [t for t in kinds if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            out[path] = SchemaField()
            _model_fields(nested[0], path, out)
            continue
        choices: tuple[str, ...] | None = None
        if kinds and typing.get_origin(kinds[0]) is Literal:
            choices = tuple(str(v) for v in typing.get_args(kinds[0]))
        elif kinds and isinstance(kinds[0], type) and issubclass(kinds[0], enum.Enum):
            choices = tuple(str(member.value) for member in kinds[0])
        free = bool(kinds) and (kinds[0] is dict or typing.get_origin(kinds[0]) is dict)
        out[path] = SchemaField(choices=choices, free=free)


def _schema() -> ContextSchema:
    fields: dict[str, SchemaField] = {"intent": SchemaField()}
    _model_fields(Intent, "intent", fields)
    fields.update(
        {
            "endpoint": SchemaField(),
            "endpoint.name": SchemaField(),
            "endpoint.exists": SchemaField(),
            "version": SchemaField(),
            "version.model": SchemaField(),
            "version.version": SchemaField(),
            "version.runtime": SchemaField(),
            "version.artifact_format": SchemaField(choices=ARTIFACT_FORMATS),
            "version.metrics": SchemaField(free=True),
            "version.tags": SchemaField(free=True),
            "actor": SchemaField(),
            "actor.name": SchemaField(),
            "actor.kind": SchemaField(choices=("admin", "user", "oidc", "key", "system")),
            "environment": SchemaField(),
            "environment.name": SchemaField(),
            "environment.kind": SchemaField(choices=_KINDS),
            "environment.sensitivities": SchemaField(),
            "environment.accepts_sensitivity": SchemaField(),
            "rollout": SchemaField(),
            "rollout.created_by": SchemaField(),
            "rollout.approved_by": SchemaField(),
            "rollout.strategy": SchemaField(choices=_STRATEGIES),
            "rollout.from_revision": SchemaField(),
            "rollout.to_revision": SchemaField(),
            "key": SchemaField(),
            "key.project": SchemaField(),
            "key.name": SchemaField(),
            "key.team": SchemaField(),
            "key.scopes": SchemaField(),
            "key.expires_at": SchemaField(),
            "key.permissions": SchemaField(choices=("pin", "route_by_header", "any_customer")),
            "key.customers": SchemaField(),
        }
    )
    intent_stages = frozenset({"plan", "apply", "promote"})
    roots = {
        "intent": intent_stages,
        "endpoint": intent_stages,
        "version": intent_stages,
        "environment": intent_stages,
        "rollout": frozenset({"promote"}),
        "key": frozenset({"key_create"}),
        "actor": frozenset(STAGES),
    }
    return ContextSchema(fields, roots)


CONTEXT_SCHEMA = _schema()
"""The fields a policy may name: ``intent.*`` from the ``Intent`` model (with the file's own
key names), ``endpoint.*``, ``version.*`` (``metrics.*`` and ``tags.*`` free-form),
``environment.*``, ``actor.*``; ``rollout.*`` at ``promote`` and ``key.*`` at ``key_create``."""
