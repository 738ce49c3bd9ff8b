"""OpenAI request bodies: every field honoured or refused with a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.core.errors import InvalidRequest
from modelport.runtimes.json_grammar import response_grammar, tool_grammar
from modelport.runtimes.tasks import TokenLogprob, Tool
from modelport.runtimes.tool_calls import ToolCallParser, render_messages
from modelport.worker.openai_requests import parse_chat, parse_completion, parse_embedding

HI = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _chat_error(**body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat({"model": "chat-small", "messages": HI, **body})
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
         "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
         "messages[0].content[0].text"),
        ({"messages": [*HI, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
         "messages[1].content[0].type"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        # unhashable where a name is looked up (found by the fuzzing)
        ({"messages": [{"role": "user", "content": [{"type": [], "text": ""}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": {"a": 1}, "text": ""}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi", "colour": "red"}]},
         "messages[0].colour"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
        ({"safety_identifier": "u"}, "safety_identifier"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 7}, "stop"),
        ({"logit_bias": {"abc": 1}}, "logit_bias.abc"),
        ({"logit_bias": {"\u00b2": 1}}, "logit_bias.\u00b2"),
        ({"logit_bias": {"5": 101}}, "logit_bias.5"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"user": 5}, "user"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": True, "stream_options": {"shout": True}}, "stream_options.shout"),
        ({"stream": "yes"}, "stream"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"store": True}, "store"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
         "response_format.json_schema.name"),
        ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [TOOL, TOOL]}, "tools[1].function.name"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": [TOOL], "response_format": {"type": "json_object"}}, "response_format"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)  # fmt: skip
def test_chat_mistakes_name_the_field(body: dict[str, Any], param: str) -> None:
    assert _chat_error(**body).details["param"] == param


def test_chat_request_carries_every_honoured_parameter() -> None:
    options = parse_chat(
        {
            "model": "chat-small",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"x"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "temperature": 0,
            "top_p": 0.5,
            "presence_penalty": 1,
            "frequency_penalty": -1,
            "logit_bias": {"42": -100},
            "logprobs": True,
            "top_logprobs": 3,
            "max_completion_tokens": 9,
            "seed": -5,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "user": "u1",
            "store": False,
            "service_tier": "auto",
            "n": 1,
        }
    )
    request = options.request
    assert (request.temperature, request.top_p) == (0.0, 0.5)
    assert (request.presence_penalty, request.frequency_penalty) == (1.0, -1.0)
    assert request.logit_bias == {42: -100.0}
    assert (request.logprobs, request.top_logprobs, request.max_tokens) == (True, 3, 9)
    assert (request.seed, request.stop, request.tool_choice) == (-5, ["\n"], "get_weather")
    assert options.stream and options.include_usage
    assert request.messages is not None and request.messages[0]["content"] == "be brief"
    rendered = render_messages(request.messages, request.tools)
    assert rendered[0]["role"] == "system" and "get_weather" in rendered[0]["content"]
    assert (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}' in (rendered[2]["content"])
    )
    assert rendered[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}


def test_nulls_mean_not_given() -> None:
    options = parse_chat(
        {"model": "m", "messages": HI, "temperature": None, "audio": None, "tools": None}
    )
    assert options.request.temperature == 0.7 and not options.request.tools


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "logprobs": 1, "echo": True}, "echo"),
        ({"prompt": "x", "messages": HI}, "messages"),
    ],
)
def test_completion_mistakes_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_completion({"model": "m", **body})
    assert info.value.details["param"] == param


def test_completion_takes_token_ids_and_legacy_logprobs() -> None:
    options = parse_completion({"model": "m", "prompt": [[1, 2, 3]], "logprobs": 2, "echo": False})
    assert options.request.prompt_ids == [1, 2, 3]
    assert options.completion_logprobs == 2 and options.request.top_logprobs == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input[0]"),
        ({"input": [1, 2, 3]}, "input[0]"),
        ({"input": [[1, 2]]}, "input[0]"),
        ({"input": ["a", None]}, "input[1]"),
        ({"input": ["a"] * 4}, "input"),
        ({"input": "x" * 101}, "input"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "truncate": True}, "truncate"),
    ],
)
def test_embedding_mistakes_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embedding({"model": "m", **body}, max_inputs=3, max_chars=100)
    assert info.value.details["param"] == param


# -- grammars ----------------------------------------------------------------------------------


def test_strict_schemas_refuse_what_the_grammar_cannot_enforce() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
    with pytest.raises(InvalidRequest) as info:
        response_grammar(schema, strict=True, param="s")
    assert info.value.details["param"] == "s.properties.age.minimum"
    # Not strict: the structure is still enforced, the bound is best effort.
    assert "age" in response_grammar(schema, strict=False, param="s")


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "object", "properties": {"a": True}}, "s.properties.a"),
        ({"type": "wizard"}, "s.type"),
        ({"$ref": "https://example.com/schema.json"}, "s.$ref"),
        ({"type": "string", "maxLength": 100000}, "s.maxLength"),
        ({"type": "string", "pattern": "^a{1000000}$"}, "s.pattern"),
        ({"type": "string", "pattern": "no anchors"}, "s.pattern"),
    ],
)
def test_bad_schemas_are_400_naming_the_path(schema: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        response_grammar(schema, strict=False, param="s")
    assert info.value.details["param"] == param


@pytest.mark.parametrize(
    "schema",
    [{"const": {"$ref": True}}, {"enum": ["a", {"$ref": 1}]}, {"const": [{"$ref": False}]}],
)
def test_values_that_look_like_references_are_400(schema: dict[str, Any]) -> None:
    """llama.cpp's converter resolves every ``$ref`` key, even inside a ``const`` or ``enum``
    value, and fails on one that is not a string (found by fuzzing the converter)."""
    with pytest.raises(InvalidRequest) as info:
        response_grammar(schema, strict=False, param="s")
    assert info.value.details["param"] == "s"


def test_defs_of_two_tools_do_not_collide() -> None:
    def tool(name: str, kind: str) -> Tool:
        return Tool(
            name,
            parameters={
                "type": "object",
                "properties": {"item": {"$ref": "#/$defs/Item"}},
                "$defs": {"Item": {"type": kind}},
            },
        )

    grammar = tool_grammar([tool("a", "integer"), tool("b", "boolean")], choice="required")
    # The converter names rules after a $ref's last segment: without renaming, tool b's
    # "Item" would have reused tool a's integer rule.
    assert "tool-call-0-arguments-item ::= integer" in grammar
    assert "tool-call-1-arguments-item ::= boolean" in grammar
    assert "free-text" not in grammar
    assert "free-text" in tool_grammar([tool("a", "integer")], choice="auto")


def test_parser_streams_a_call_and_holds_back_only_its_closing() -> None:
    parser = ToolCallParser()
    text = '<tool_call> {"name": "get_weather", "arguments": {"city": "Paris"} }</tool_call>'
    lp = TokenLogprob("x", b"x", -0.5)
    deltas = [d for ch in text for d in parser.feed(ch, [lp])] + parser.finish()
    assert deltas[0].call_name == "get_weather" and deltas[0].call_id
    assert "".join(d.arguments for d in deltas) == '{"city": "Paris"}'
    assert parser.closed and sum(len(d.logprobs) for d in deltas) == len(text)


def test_parser_passes_text_through() -> None:
    parser = ToolCallParser()
    deltas = parser.feed("Hello", []) + parser.feed(" there", []) + parser.finish()
    assert "".join(d.content for d in deltas) == "Hello there" and not parser.closed


def test_a_strict_tool_refuses_what_its_grammar_cannot_enforce() -> None:
    parameters = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    loose = Tool("count", parameters=parameters)
    assert "count" in tool_grammar([loose], choice="required")
    with pytest.raises(InvalidRequest) as info:
        tool_grammar([Tool("count", parameters=parameters, strict=True)], choice="required")
    assert info.value.details["param"] == "tools[0].function.parameters.properties.n.minimum"
