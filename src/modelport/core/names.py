"""Validation of the names users choose and of model references."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.core.errors import InvalidRequest

__all__ = ["MAX_VERSION", "ModelRef", "check_name", "parse_model_ref"]

MAX_VERSION = 2**31 - 1
"""The largest version number: what every database's INTEGER holds."""
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid resource name, else raise a clear 400."""
    if not _NAME.match(name):
        raise InvalidRequest(
            f"invalid {kind} name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
            field="name",
        )
    return name


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``NAME@ALIAS`` or ``NAME:VERSION``; a bare ``NAME`` means its latest version."""

    model: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.model}@{self.alias}"
        if self.version is not None:
            return f"{self.model}:{self.version}"
        return self.model


def parse_model_ref(ref: str) -> ModelRef:
    """Parse a model reference such as ``breast-cancer@champion`` or ``breast-cancer:2``."""
    if "@" in ref:
        model, alias = ref.split("@", 1)
        return ModelRef(check_name("model", model), alias=check_name("alias", alias))
    if ":" in ref:
        model, version = ref.split(":", 1)
        # ASCII digits only ("²" is a digit to str.isdigit), and short enough to be a version.
        if not (version.isascii() and version.isdigit() and len(version) <= 10) or not (
            1 <= int(version) <= MAX_VERSION
        ):
            raise InvalidRequest(
                f"invalid model reference {ref!r}: the version after ':' must be a number from "
                f"1 to {MAX_VERSION}",
                field="model",
            )
        return ModelRef(check_name("model", model), version=int(version))
    return ModelRef(check_name("model", ref))
