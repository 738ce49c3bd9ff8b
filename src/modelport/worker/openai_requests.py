"""OpenAI request bodies checked field by field before a runtime sees them.

Every parameter of OpenAI's chat, completion and embedding requests is either honoured or
refused with a 400 whose ``param`` names it (``messages[1].content[0].text``); a field
OpenAI does not define is refused too, so that nothing a client asks for is silently
ignored. ``null`` means "not given", as in OpenAI's API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelport.runtimes.tasks import GenerateRequest
from modelport.worker.openai_fields import (
    boolean,
    fail,
    integer,
    json_object,
    known,
    number,
    string,
)
from modelport.worker.openai_tools import parse_response_format, parse_tools

__all__ = [
    "ChatOptions",
    "EmbeddingRequest",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
]

_TOKEN_ID = re.compile(r"^[0-9]{1,9}\Z")  # ASCII digits: str.isdigit() also takes "²"
_MAX_STOPS = 4
_MAX_BIAS = 1024
_MAX_TOP_LOGPROBS = 20
_MAX_COMPLETION_LOGPROBS = 5

#: Fields OpenAI defines that this server cannot honour, and why.
_REFUSED_CHAT = {
    "audio": "audio output is not supported: this model writes text",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this model does not reason in a separate phase",
    "functions": "the deprecated 'functions' is not supported: use 'tools'",
    "function_call": "the deprecated 'function_call' is not supported: use 'tool_choice'",
    "web_search_options": "web search is not supported",
    "verbosity": "'verbosity' is not supported",
    "prompt_cache_key": "'prompt_cache_key' is not supported",
    "prompt_cache_retention": "'prompt_cache_retention' is not supported",
    "metadata": "'metadata' is kept only with 'store', which is not supported",
    "safety_identifier": "'safety_identifier' is not supported: no abuse monitoring runs here",
}
_CHAT_FIELDS = frozenset(
    {
        "model", "messages", "frequency_penalty", "presence_penalty", "logit_bias",
        "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens", "n",
        "parallel_tool_calls", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "tool_choice", "tools", "user",
        "store", "service_tier", "modalities",
    }
)  # fmt: skip
_COMPLETION_FIELDS = frozenset(
    {
        "model", "prompt", "best_of", "echo", "frequency_penalty", "presence_penalty",
        "logit_bias", "logprobs", "max_tokens", "n", "seed", "stop", "stream",
        "stream_options", "suffix", "temperature", "top_p", "user",
    }
)  # fmt: skip
_EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
_MESSAGE_FIELDS = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "refusal", "tool_calls", "audio", "function_call"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_UNSUPPORTED_PARTS = {
    "image_url": "images",
    "input_audio": "audio",
    "file": "files",
}


# -- shared sampling parameters ----------------------------------------------------------------


def _sampling(payload: dict[str, Any], request: GenerateRequest) -> None:
    request.temperature = number(payload, "temperature", 0.7, 0.0, 2.0)
    request.top_p = number(payload, "top_p", 1.0, 0.0, 1.0)
    request.presence_penalty = number(payload, "presence_penalty", 0.0, -2.0, 2.0)
    request.frequency_penalty = number(payload, "frequency_penalty", 0.0, -2.0, 2.0)
    seed = payload.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63
    ):
        raise fail("'seed' must be a 64-bit integer", "seed")
    request.seed = seed
    if (n := integer(payload, "n", 1)) not in (None, 1):
        raise fail(f"'n' must be 1: this server generates one choice per request, not {n}", "n")
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None:
        if (
            not isinstance(stops, list)
            or not 0 < len(stops) <= _MAX_STOPS
            or not all(isinstance(s, str) and s for s in stops)
        ):
            raise fail(
                f"'stop' must be a non-empty string or a list of 1 to {_MAX_STOPS} of them",
                "stop",
            )
        request.stop = stops
    bias = payload.get("logit_bias")
    if bias is not None:
        bias = json_object(bias, "logit_bias")
        if len(bias) > _MAX_BIAS:
            raise fail(f"'logit_bias' may name at most {_MAX_BIAS} tokens", "logit_bias")
        for key, value in bias.items():
            param = f"logit_bias.{key}"
            if not _TOKEN_ID.match(key):
                raise fail(f"'{param}': keys must be token ids (integers as strings)", param)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise fail(f"'{param}' must be a number from -100 to 100", param)
            if not -100 <= value <= 100:
                raise fail(f"'{param}' must be a number from -100 to 100", param)
            request.logit_bias[int(key)] = float(value)
    string(payload, "user", "user")


def _stream_options(payload: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(stream, include_usage, include_obfuscation)."""
    stream = boolean(payload, "stream")
    options = payload.get("stream_options")
    if options is None:
        return stream, False, False
    if not stream:
        raise fail("'stream_options' is only allowed with stream: true", "stream_options")
    options = json_object(options, "stream_options")
    known(options, frozenset({"include_usage", "include_obfuscation"}), "stream_options",
           "stream_options.")  # fmt: skip
    usage, obfuscation = (
        boolean(options, name) for name in ("include_usage", "include_obfuscation")
    )
    return stream, usage, obfuscation


# -- chat --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ChatOptions:
    """What the handler needs beside the runtime's request: how to answer."""

    request: GenerateRequest
    stream: bool = False
    include_usage: bool = False
    include_obfuscation: bool = False
    logprobs: bool = False  # chat: the answer carries logprobs.content
    completion_logprobs: int | None = None  # completions: the legacy logprobs object


def _text(content: Any, param: str, allowed: frozenset[str] = frozenset({"text"})) -> str:
    """A message's content: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise fail(f"'{param}' must be a string or a non-empty list of text parts", param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        part = json_object(part, where)
        kind = part.get("type")
        if not isinstance(kind, str):  # a list or an object cannot even be looked up
            raise fail(f"'{where}.type' must be one of {sorted(allowed)}", f"{where}.type")
        if kind in _UNSUPPORTED_PARTS:
            raise fail(
                f"'{where}' is an '{kind}' part: this model reads text only, not "
                f"{_UNSUPPORTED_PARTS[kind]}",
                f"{where}.type",
            )
        if kind not in allowed:
            raise fail(f"'{where}.type' must be one of {sorted(allowed)}", f"{where}.type")
        known(part, frozenset({"type", kind}), f"a '{kind}' part", f"{where}.")
        value = part.get(kind)
        if not isinstance(value, str):
            raise fail(f"'{where}.{kind}' must be a string", f"{where}.{kind}")
        texts.append(value)
    return "".join(texts)


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list) or not calls:
        raise fail(f"'{param}' must be a non-empty list of tool calls", param)
    checked = []
    for index, call in enumerate(calls):
        where = f"{param}[{index}]"
        call = json_object(call, where)
        known(call, frozenset({"id", "type", "function"}), "a tool call", f"{where}.")
        if not isinstance(call.get("id"), str):
            raise fail(f"'{where}.id' must be a string", f"{where}.id")
        if call.get("type") != "function":
            raise fail(f"'{where}.type' must be 'function'", f"{where}.type")
        function = json_object(call.get("function"), f"{where}.function")
        known(function, frozenset({"name", "arguments"}), "a function call",
               f"{where}.function.")  # fmt: skip
        for name in ("name", "arguments"):
            if not isinstance(function.get(name), str):
                raise fail(f"'{where}.function.{name}' must be a string",
                            f"{where}.function.{name}")  # fmt: skip
        checked.append({"id": call["id"], "type": "function", "function": function})
    return checked


def _message(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    message = json_object(message, where)
    role = message.get("role")
    if not isinstance(role, str) or role not in _MESSAGE_FIELDS:
        hint = " (the deprecated 'function' role: use 'tool')" if role == "function" else ""
        raise fail(
            f"'{where}.role' must be one of {sorted(_MESSAGE_FIELDS)}{hint}", f"{where}.role"
        )
    known(message, _MESSAGE_FIELDS[role], f"a '{role}' message", f"{where}.")
    if message.get("name") is not None:  # a plain chat template has nowhere to put it
        raise fail(
            f"'{where}.name' is not supported: this model's chat template has no participant "
            "names; put the name in the content",
            f"{where}.name",
        )
    checked: dict[str, Any] = {"role": role}
    content = message.get("content")
    if role == "assistant":
        for name in ("audio", "function_call"):
            if message.get(name) is not None:
                raise fail(f"'{where}.{name}' is not supported", f"{where}.{name}")
        refusal = string(message, "refusal", f"{where}.refusal")
        if message.get("tool_calls") is not None:
            checked["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
        if content is None and refusal is None and "tool_calls" not in checked:
            raise fail(f"'{where}.content' is required without tool_calls", f"{where}.content")
        text = (
            ""
            if content is None
            else _text(content, f"{where}.content", frozenset({"text", "refusal"}))
        )
        checked["content"] = text or refusal or ""
        return checked
    if content is None:
        raise fail(f"'{where}.content' is required", f"{where}.content")
    checked["content"] = _text(content, f"{where}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise fail(f"'{where}.tool_call_id' must be a string", f"{where}.tool_call_id")
    return checked


def _chat_only(payload: dict[str, Any]) -> None:
    for name, reason in _REFUSED_CHAT.items():
        if payload.get(name) is not None:
            raise fail(f"'{name}': {reason}", name)
    if payload.get("store") is True:
        raise fail("'store': this server does not store completions", "store")
    boolean(payload, "store")
    tier = payload.get("service_tier")
    if tier is not None and tier not in ("auto", "default"):
        raise fail("'service_tier' must be 'auto' or 'default': there is one tier", "service_tier")
    modalities = payload.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise fail("'modalities' must be [\"text\"]: this model writes text only", "modalities")


def _max_tokens(payload: dict[str, Any], names: tuple[str, ...]) -> int | None:
    values = {name: integer(payload, name, 1) for name in names}
    given = {v for v in values.values() if v is not None}
    if len(given) > 1:
        raise fail(f"give one of {' or '.join(names)}, not two different values", names[-1])
    return given.pop() if given else None


def parse_chat(payload: dict[str, Any]) -> ChatOptions:
    """A chat completions body, checked; raises ``InvalidRequest`` naming the field."""
    known(payload, _CHAT_FIELDS | frozenset(_REFUSED_CHAT), "chat completions")
    _chat_only(payload)
    request = GenerateRequest()
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise fail("'messages' must be a non-empty list of {role, content}", "messages")
    request.messages = [_message(m, i) for i, m in enumerate(messages)]
    _sampling(payload, request)
    request.max_tokens = _max_tokens(payload, ("max_tokens", "max_completion_tokens"))
    parse_tools(payload, request)
    parse_response_format(payload, request)
    if request.json_schema is not None and request.tools and request.tool_choice == "auto":
        raise fail(
            "'response_format' with tool_choice 'auto' is not supported: choose 'required', "
            "a function or 'none'",
            "response_format",
        )
    request.logprobs = boolean(payload, "logprobs")
    top = integer(payload, "top_logprobs", 0, _MAX_TOP_LOGPROBS)
    if top and not request.logprobs:
        raise fail("'top_logprobs' needs logprobs: true", "top_logprobs")
    request.top_logprobs = top or 0
    stream, usage, obfuscation = _stream_options(payload)
    return ChatOptions(request, stream, usage, obfuscation, logprobs=request.logprobs)


def parse_completion(payload: dict[str, Any]) -> ChatOptions:
    """A (legacy) completions body, checked."""
    known(payload, _COMPLETION_FIELDS, "completions")
    request = GenerateRequest()
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        request.prompt = prompt
    elif (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        request.prompt_ids = prompt
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise fail("'prompt' must be one prompt: send one request per prompt", "prompt")
    else:
        raise fail("'prompt' must be a string or a non-empty list of token ids", "prompt")
    _sampling(payload, request)
    request.max_tokens = _max_tokens(payload, ("max_tokens",))
    if (best := integer(payload, "best_of", 1)) not in (None, 1):
        raise fail(f"'best_of' must be 1: this server generates one choice, not {best}",
                    "best_of")  # fmt: skip
    if payload.get("suffix") is not None:
        raise fail("'suffix' is not supported: this model does not fill in the middle", "suffix")
    request.echo = boolean(payload, "echo")
    logprobs = integer(payload, "logprobs", 0, _MAX_COMPLETION_LOGPROBS)
    if logprobs is not None and request.echo:
        raise fail("'logprobs' with echo is not supported: the prompt's are not kept", "echo")
    request.logprobs = logprobs is not None
    request.top_logprobs = logprobs or 0
    stream, usage, obfuscation = _stream_options(payload)
    return ChatOptions(request, stream, usage, obfuscation, completion_logprobs=logprobs)


# -- embeddings --------------------------------------------------------------------------------


@dataclass(slots=True)
class EmbeddingRequest:
    texts: list[str]
    encoding: str  # "float" or "base64"
    dimensions: int | None


def parse_embedding(
    payload: dict[str, Any], *, max_inputs: int, max_chars: int
) -> EmbeddingRequest:
    """An embeddings body, checked, within the server's caps on inputs and characters."""
    known(payload, _EMBEDDING_FIELDS, "embeddings")
    texts = payload.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise fail("'input' must be a string or a non-empty list of strings", "input")
    for index, text in enumerate(texts):
        if isinstance(text, int | list) and not isinstance(text, bool):
            raise fail(
                "'input' holds token ids: this model embeds text only, send strings",
                f"input[{index}]",
            )
        if not isinstance(text, str) or not text:
            raise fail(f"'input[{index}]' must be a non-empty string", f"input[{index}]")
    if len(texts) > max_inputs:
        raise fail(f"'input' has {len(texts)} texts; at most {max_inputs} per request", "input")
    if (total := sum(len(t) for t in texts)) > max_chars:
        raise fail(f"'input' has {total} characters; at most {max_chars} per request", "input")
    encoding = payload.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise fail("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = integer(payload, "dimensions", 1)
    string(payload, "user", "user")
    return EmbeddingRequest(texts, encoding, dimensions)
