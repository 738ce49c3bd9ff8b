"""Reading an intent file's YAML safely, and reporting its problems with their lines.

``IntentLoader`` refuses anchors, aliases and deep nesting before a document is expanded;
``walk`` maps each field path to the line it was written on, so that ``field_problem`` can
turn a pydantic error into ``<field path> (line N): <what is wrong>`` and ``fail`` can raise
them all as one ``ValidationFailed``. ``core.intent.parse_intent`` puts these together.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import yaml

from modelport.core.errors import ValidationFailed

__all__ = [
    "MAX_INTENT_BYTES",
    "MAX_INTENT_DEPTH",
    "FieldPath",
    "IntentLoader",
    "Problem",
    "Refused",
    "fail",
    "field_line",
    "field_problem",
    "read_mapping",
    "show",
    "walk",
]

FieldPath = tuple[str | int, ...]
Problem = tuple[str, int, str]  # field path, line, message

MAX_INTENT_BYTES = 64 * 1024
"""The largest intent file: a full one with every field and many segments is ~2 KB."""
MAX_INTENT_DEPTH = 32
"""How deeply mappings and lists may nest; the schema itself needs 6 levels."""


class Refused(yaml.MarkedYAMLError):
    """Valid YAML that an intent file may not use."""


class IntentLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses what makes a small file expensive, before expanding it.

    Anchors and aliases let 400 bytes stand for megabytes once constructed (a "billion laughs"),
    so both are refused where they are written; nesting is refused past ``MAX_INTENT_DEPTH``
    while the document is composed, before any recursion gets deep. Values that PyYAML
    cannot construct (an integer of 5,000 digits, a date with month 13) become YAML errors
    with their line instead of escaping as ``ValueError``.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise Refused(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in intent files: write "
                "the value out where it is used",
                event.start_mark,
            )
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_INTENT_DEPTH:
                raise Refused(
                    None,
                    None,
                    f"lists and mappings nest more than {MAX_INTENT_DEPTH} levels deep",
                    event.start_mark,
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {show(node.value)}: {exc}", node.start_mark
            ) from None


def walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    problems: list[Problem],
    seen: set[int],
) -> None:
    """Map each field path to its line, and report duplicate keys (PyYAML keeps the last)."""
    if id(node) in seen:  # an alias: its node was walked where the anchor is
        return
    seen.add(id(node))
    for child_path, child_line, child in _children(node, path, problems):
        lines.setdefault(child_path, child_line)
        walk(child, child_path, lines, problems, seen)


def _children(
    node: yaml.Node, path: FieldPath, problems: list[Problem]
) -> Iterator[tuple[FieldPath, int, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield (*path, index), item.start_mark.line + 1, item
    elif isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue  # merge keys and complex keys have no field path of their own
            line = key.start_mark.line + 1
            if key.value in keys:
                problems.append((_render((*path, key.value)), line, "duplicate key"))
            keys.add(key.value)
            yield (*path, key.value), line, value


def field_line(text: str, path: str) -> int | None:
    """The 1-based line where a dotted field path (``resources.hardware``,
    ``routing.segments[0].revision``) is written in an intent's text; ``None`` when the path
    is not in it, or the text is not a readable mapping.

    A field left to its default has no line; its nearest written parent's is not guessed, so
    a caller can say "line N" only where the user wrote the value."""
    try:
        _, lines, _ = read_mapping(text, "intent", needs="fields")
    except ValidationFailed:
        return None
    return lines.get(_parse_path(path))


def _parse_path(path: str) -> FieldPath:
    parts: list[str | int] = []
    for dotted in path.split("."):
        name, *indexes = dotted.split("[")
        if name:
            parts.append(name)
        for index in indexes:
            number = index.rstrip("]")
            parts.append(int(number) if number.isdigit() else number)
    return tuple(parts)


def field_problem(error: Any, lines: dict[FieldPath, int]) -> Problem:
    """One pydantic error as (field path, line, plain message)."""
    loc: FieldPath = tuple(error["loc"])
    known = loc
    while known not in lines:  # e.g. a missing field: point at its parent mapping
        known = known[:-1]
    return _render(loc), lines[known], _plain(error)


def _render(loc: FieldPath) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "bool_type": "true or false",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _plain(error: Any) -> str:
    """Pydantic's message in plain words; its wording leaks its internals."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, show(error.get("input"))
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {got}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {show(ctx.get(key))}, got {got}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}; got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def show(value: object) -> str:
    """A value as the user wrote it in YAML, cut short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 0.0 reads as 0: the user most likely wrote 0
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(filename: str, problems: list[Problem]) -> NoReturn:
    """Raise ``ValidationFailed`` listing ``problems`` in line order."""
    problems = sorted(problems, key=lambda problem: problem[1])
    count = len(problems)
    head = f"{filename} has {count} problem{'s' if count != 1 else ''}:"
    body = [
        f"  {field} (line {line}): {message}" if field else f"  line {line}: {message}"
        for field, line, message in problems
    ]
    raise ValidationFailed(
        "\n".join([head, *body]),
        errors=[
            {"field": field, "line": line, "message": message} for field, line, message in problems
        ],
    )


def read_mapping(
    text: str, filename: str, *, needs: str
) -> tuple[Any, dict[FieldPath, int], list[Problem]]:
    """A YAML document that must be a mapping: its data, each field path's line, and the
    duplicate keys found (reported with the schema's problems, so the user sees all at once).

    Files over ``MAX_INTENT_BYTES``, control characters, anchors, aliases and nesting deeper
    than ``MAX_INTENT_DEPTH`` are refused (``ValidationFailed``) before anything is expanded;
    ``needs`` names what an empty file lacks ("endpoint, task and model")."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INTENT_BYTES:
        fail(filename, [("", 1, f"the file is {size} bytes; the limit is {MAX_INTENT_BYTES}")])
    try:
        loader = IntentLoader(text)  # refuses control characters at once
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        what = f"not valid YAML: character {exc.character:#06x} is not allowed ({exc.reason})"
        fail(filename, [("", line, what)])
    problems: list[Problem] = []
    lines: dict[FieldPath, int] = {(): 1}
    try:
        node = loader.get_single_node()
        if node is not None:
            walk(node, (), lines, problems, set())
            data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = getattr(exc, "problem", None) or str(exc)
        what = what if isinstance(exc, Refused) else f"not valid YAML: {what}"
        fail(filename, [("", line, what)])
    finally:
        loader.dispose()
    if node is None:
        fail(filename, [("", 1, f"the file is empty: it needs at least {needs}")])
    if not isinstance(node, yaml.MappingNode):
        got = "a list" if isinstance(node, yaml.SequenceNode) else show(data)
        line = node.start_mark.line + 1
        fail(filename, [("", line, f"the top level must be a mapping of fields, got {got}")])
    return data, lines, problems
