"""JSON Schemas turned into llama.cpp grammars (GBNF), so that structured output and tool
calls are constrained token by token rather than hoped for.

llama-cpp-python's converter does the translation. Around it this module makes three things
hold: a schema it cannot translate is a 400 naming the schema's path (never a crash in the
replica); ``$defs`` of several schemas (one per tool) never collide, because the converter
names rules after the last segment of a ``$ref``; and under ``strict`` every keyword the
grammar cannot enforce (``minimum``, ``format: email``, ...) is refused instead of being
silently dropped. Size limits keep a schema from expanding into a grammar that takes the
replica down (repetition counts are unrolled into nested rules). Without ``strict`` the
keywords the grammar cannot enforce are left to the model, as OpenAI does without it.
"""

from __future__ import annotations

import re
from typing import Any

from modelport.core.errors import InvalidRequest
from modelport.runtimes.tasks import Tool

__all__ = ["TOOL_CALL_CLOSE", "TOOL_CALL_OPEN", "response_grammar", "tool_grammar"]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

#: Keywords the converter turns into grammar rules.
_ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "$ref", "pattern", "minLength",
        "maxLength", "format",
    }
)  # fmt: skip
#: Keywords that describe and never constrain.
_ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "$schema", "$id", "$comment",
        "deprecated", "readOnly", "writeOnly",
    }
)  # fmt: skip
#: Translated loosely (``oneOf`` as ``anyOf``, ``allOf`` merging properties): allowed
#: unless ``strict`` asks for exactness.
_LOOSE = frozenset({"oneOf", "allOf"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid3", "uuid4", "uuid5"})
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_MAX_COUNT = 256  # repetition bounds are unrolled into nested rules: keep them small
_MAX_NODES = 2_000
_MAX_DEPTH = 32
_REF = re.compile(r"^#/(\$defs|definitions)/([^/]+)$")
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


class _Schemas:
    """Collects schemas into one document whose ``$defs`` have unique names."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.defs: dict[str, Any] = {}
        self.nodes = 0

    def add(self, schema: Any, path: str, prefix: str) -> dict[str, Any]:
        """``schema`` checked, with its ``$defs`` moved here and its refs renamed."""
        if not isinstance(schema, dict):
            raise InvalidRequest(f"'{path}' must be a JSON Schema object", param=path)
        renames: dict[str, str] = {}
        local: dict[str, tuple[str, Any]] = {}
        for key in ("$defs", "definitions"):
            defs = schema.get(key)
            if defs is None:
                continue
            if not isinstance(defs, dict):
                raise InvalidRequest(f"'{path}.{key}' must be an object", param=f"{path}.{key}")
            for name, sub in defs.items():
                unique = f"{prefix}-{re.sub(r'[^a-zA-Z0-9]+', '-', name)}-{len(self.defs)}"
                renames[f"#/{key}/{name}"] = unique
                local[unique] = (f"{path}.{key}.{name}", sub)
                self.defs[unique] = None  # reserve the name
        for unique, (sub_path, sub) in local.items():
            self.defs[unique] = self._walk(sub, sub_path, renames, 1)
        body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
        checked: dict[str, Any] = self._walk(body, path, renames, 0)
        return checked

    def _walk(self, node: Any, path: str, renames: dict[str, str], depth: int) -> Any:
        if not isinstance(node, dict):
            raise InvalidRequest(f"'{path}' must be a JSON Schema object", param=path)
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise InvalidRequest(
                f"'{path}': the schema is too large to enforce (at most {_MAX_NODES} "
                f"subschemas, nested at most {_MAX_DEPTH} deep)",
                param=path,
            )
        out: dict[str, Any] = {}
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in _ANNOTATIONS:
                continue
            if key not in _ENFORCED and not (key in _LOOSE and not self.strict):
                if not self.strict:
                    continue  # without strict, adherence is best effort, as with OpenAI
                raise InvalidRequest(
                    f"'{where}': the JSON Schema keyword '{key}' cannot be enforced by this "
                    "model's grammar; remove it or set strict to false",
                    param=where,
                )
            out[key] = self._keyword(key, value, where, renames, depth)
        return out

    def _keyword(  # one branch per keyword reads best
        self, key: str, value: Any, where: str, renames: dict[str, str], depth: int
    ) -> Any:
        def fail(message: str) -> InvalidRequest:
            return InvalidRequest(f"'{where}' {message}", param=where)

        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or not all(isinstance(k, str) and k in _TYPES for k in kinds):
                raise fail(f"must be one of {sorted(_TYPES)} or a list of them")
            return value
        if key == "properties":
            if not isinstance(value, dict):
                raise fail("must be an object of schemas")
            return {
                name: self._walk(sub, f"{where}.{name}", renames, depth + 1)
                for name, sub in value.items()
            }
        if key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail("must be a list of property names")
            return value
        if key == "additionalProperties":
            if isinstance(value, bool):
                return value
            return self._walk(value, where, renames, depth + 1)
        if key == "items":
            if isinstance(value, bool):
                raise fail("must be a schema")
            if isinstance(value, list):
                return [
                    self._walk(s, f"{where}[{i}]", renames, depth + 1) for i, s in enumerate(value)
                ]
            return self._walk(value, where, renames, depth + 1)
        if key in ("prefixItems", "anyOf", "oneOf", "allOf"):
            if not isinstance(value, list) or not value:
                raise fail("must be a non-empty list of schemas")
            return [self._walk(s, f"{where}[{i}]", renames, depth + 1) for i, s in enumerate(value)]
        if key in _COUNTS:
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= _MAX_COUNT
            ):
                raise fail(f"must be an integer from 0 to {_MAX_COUNT} to be enforced")
            return value
        if key == "enum":
            if not isinstance(value, list) or not value:
                raise fail("must be a non-empty list")
            return value
        if key == "const":
            return value
        if key == "format":
            if not isinstance(value, str):
                raise fail("must be a string")
            if value not in _FORMATS:
                if self.strict:
                    raise fail(
                        f"'{value}' cannot be enforced (only {sorted(_FORMATS)}); remove it "
                        "or set strict to false"
                    )
                return None  # dropped below: the converter would ignore it anyway
            return value
        if key == "pattern":
            if not isinstance(value, str) or not value.startswith("^") or not value.endswith("$"):
                raise fail("must be a regular expression anchored with ^ and $")
            for match in _REPEAT.finditer(value):
                if any(int(n) > _MAX_COUNT for n in match.groups() if n):
                    raise fail(f"repeats more than {_MAX_COUNT} times, which cannot be enforced")
            return value
        if key == "$ref":
            if not isinstance(value, str) or value not in renames:
                raise fail(
                    "must point into this schema's own $defs or definitions "
                    "('#/$defs/Name'); other references are not followed"
                )
            return f"#/$defs/{renames[value]}"
        raise fail("is not supported")  # pragma: no cover - the caller checked the key


def _drop_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_none(v) for k, v in node.items() if v is not None or k in ("const",)}
    if isinstance(node, list):
        return [_drop_none(v) for v in node]
    return node


def _convert(document: dict[str, Any], root: str, param: str) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        schema = converter.resolve_refs(_drop_none(document), "input")
        converter.visit(schema, root)  # type: ignore[no-untyped-call]
    # AttributeError: the converter resolves every "$ref" key, even one inside a const or
    # enum value, and calls string methods on whatever it holds.
    except (
        AssertionError,
        AttributeError,
        ValueError,
        KeyError,
        TypeError,
        RecursionError,
        re.error,
    ) as exc:
        raise InvalidRequest(
            f"'{param}' cannot be turned into a grammar: {type(exc).__name__}: {exc}",
            param=param,
        ) from exc
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


def response_grammar(schema: dict[str, Any], *, strict: bool, param: str) -> str:
    """A grammar whose every sentence is one JSON value matching ``schema``."""
    schemas = _Schemas(strict)
    body = schemas.add(schema, param, "r")
    return _convert({**body, "$defs": schemas.defs}, "", param)


def tool_grammar(tools: list[Tool], *, choice: str) -> str:
    """A grammar for one tool call, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

    ``choice`` is ``"required"`` (any tool), a tool's name (that one), or ``"auto"``: then the
    model may instead answer in free text (which cannot start with ``<``).
    """
    schemas = _Schemas(strict=False)
    calls = []
    for index, tool in enumerate(tools):
        if choice not in ("auto", "required") and tool.name != choice:
            continue
        schemas.strict = tool.strict
        parameters = tool.parameters or {"type": "object", "properties": {}}
        arguments = schemas.add(parameters, f"tools[{index}].function.parameters", f"t{index}")
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    document = {"anyOf": calls, "$defs": schemas.defs}
    call = _convert(document, "tool-call", "tools")
    root = f'"{TOOL_CALL_OPEN}" space tool-call "{TOOL_CALL_CLOSE}"'
    # In "auto" the first character decides: '<' opens a call, anything else is an answer.
    text = " | free-text\nfree-text ::= [^<] [^\\x00]*" if choice == "auto" else ""
    return f"{call}\nroot ::= {root}{text}\n"
