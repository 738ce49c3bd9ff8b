"""``tools``, ``tool_choice`` and ``response_format`` of a chat request, checked.

Both fill in the ``GenerateRequest`` being built: the tools a model may call and which one it
must, or the JSON schema its answer must follow.
"""

from __future__ import annotations

from typing import Any

from modelport.runtimes.tasks import GenerateRequest, Tool
from modelport.worker.openai_fields import NAME, boolean, fail, json_object, known, string

__all__ = ["parse_response_format", "parse_tools"]

_MAX_TOOLS = 128


def parse_tools(payload: dict[str, Any], request: GenerateRequest) -> None:
    """Check ``tools``, ``tool_choice`` and ``parallel_tool_calls`` into ``request``."""
    tools = payload.get("tools")
    choice = payload.get("tool_choice")
    if payload.get("parallel_tool_calls") is not None:
        boolean(payload, "parallel_tool_calls")  # at most one call per answer honours both
    if tools is None:
        if choice not in (None, "none"):
            raise fail("'tool_choice' needs 'tools'", "tool_choice")
        return
    if not isinstance(tools, list) or not 0 < len(tools) <= _MAX_TOOLS:
        raise fail(f"'tools' must be a list of 1 to {_MAX_TOOLS} tools", "tools")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        tool = json_object(tool, where)
        if tool.get("type") != "function":
            raise fail(
                f"'{where}.type' must be 'function' (custom tools are not supported)",
                f"{where}.type",
            )
        known(tool, frozenset({"type", "function"}), "a tool", f"{where}.")
        function = json_object(tool.get("function"), f"{where}.function")
        known(function, frozenset({"name", "description", "parameters", "strict"}),
               "a function", f"{where}.function.")  # fmt: skip
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise fail(
                f"'{where}.function.name' must be 1 to 64 letters, digits, _ or -",
                f"{where}.function.name",
            )
        if any(t.name == name for t in request.tools):
            raise fail(f"two tools are named '{name}'", f"{where}.function.name")
        description = string(function, "description", f"{where}.function.description") or ""
        parameters = function.get("parameters")
        if parameters is not None:
            json_object(parameters, f"{where}.function.parameters")
        strict = boolean(function, "strict") if function.get("strict") is not None else False
        request.tools.append(Tool(name, description, parameters or {}, strict))
    if choice is None or choice in ("auto", "required", "none"):
        request.tool_choice = choice or "auto"
        return
    choice = json_object(choice, "tool_choice")
    if choice.get("type") != "function":
        raise fail("'tool_choice.type' must be 'function'", "tool_choice.type")
    known(choice, frozenset({"type", "function"}), "tool_choice", "tool_choice.")
    function = json_object(choice.get("function"), "tool_choice.function")
    known(function, frozenset({"name"}), "tool_choice.function", "tool_choice.function.")
    if not any(t.name == function.get("name") for t in request.tools):
        raise fail(
            "'tool_choice.function.name' must name one of the tools", "tool_choice.function.name"
        )
    request.tool_choice = function["name"]


def parse_response_format(payload: dict[str, Any], request: GenerateRequest) -> None:
    """Check ``response_format`` into ``request.json_schema`` and ``json_strict``."""
    value = payload.get("response_format")
    if value is None:
        return
    value = json_object(value, "response_format")
    kind = value.get("type")
    if kind == "text":
        known(value, frozenset({"type"}), "response_format", "response_format.")
    elif kind == "json_object":
        known(value, frozenset({"type"}), "response_format", "response_format.")
        request.json_schema = {"type": "object"}
    elif kind == "json_schema":
        known(value, frozenset({"type", "json_schema"}), "response_format", "response_format.")
        spec = json_object(value.get("json_schema"), "response_format.json_schema")
        known(spec, frozenset({"name", "description", "schema", "strict"}),
               "response_format.json_schema", "response_format.json_schema.")  # fmt: skip
        name = spec.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise fail(
                "'response_format.json_schema.name' must be 1 to 64 letters, digits, _ or -",
                "response_format.json_schema.name",
            )
        string(spec, "description", "response_format.json_schema.description")
        schema = spec.get("schema")
        request.json_schema = (
            {} if schema is None else json_object(schema, "response_format.json_schema.schema")
        )
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise fail("'response_format.json_schema.strict' must be true or false",
                        "response_format.json_schema.strict")  # fmt: skip
        request.json_strict = spec.get("strict") is True
    else:
        raise fail(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'",
            "response_format.type",
        )
