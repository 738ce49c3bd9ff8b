"""Tool calls for models without a native format: the tools go into the system prompt,
calls come back as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the Hermes
convention most small instruction-tuned models have seen), and a grammar
(``json_grammar.tool_grammar``) guarantees that what opens as a call is a well-formed one.

``ToolCallParser`` turns the generated text into OpenAI's deltas as it arrives: a call's id
and name as soon as the name is complete, then its arguments piece by piece, holding back
only the few characters that may turn out to be the closing ``}</tool_call>``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from modelport.runtimes.json_grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from modelport.runtimes.tasks import Delta, TokenLogprob, Tool, ToolCall

__all__ = ["ToolCallParser", "render_messages"]

_HEADER = re.compile(
    re.escape(TOOL_CALL_OPEN) + r'\s*\{\s*"name"\s*:\s*"([^"]*)"\s*,\s*"arguments"\s*:\s*(?=\S)'
)  # complete once the arguments' first character is there
_TRAILER = re.compile(r"\s*\}\s*" + re.escape(TOOL_CALL_CLOSE) + r"\s*$")
_HOLD = len(" } " + TOOL_CALL_CLOSE) + 1


def _tools_prompt(tools: list[Tool]) -> str:
    signatures = "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
        )
        for t in tools
    )
    return (
        "You may call functions to answer. Their signatures are within <tools></tools>:\n"
        f"<tools>\n{signatures}\n</tools>\n"
        "To call a function, answer with its name and arguments as JSON within "
        f"{TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags:\n"
        f'{TOOL_CALL_OPEN}{{"name": <function-name>, "arguments": <args-object>}}'
        f"{TOOL_CALL_CLOSE}"
    )


def render_messages(messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, str]]:
    """Messages as a plain chat template takes them: every content a string, earlier tool
    calls and their results written out in the same convention, tools in the system prompt.
    """
    rendered: list[dict[str, str]] = []
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        content = message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call["function"]
                try:
                    arguments: Any = json.loads(function["arguments"])
                except ValueError:
                    arguments = function["arguments"]
                calls.append(
                    TOOL_CALL_OPEN
                    + json.dumps({"name": function["name"], "arguments": arguments})
                    + TOOL_CALL_CLOSE
                )
            content = "\n".join([content, *calls]) if content else "\n".join(calls)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        rendered.append({"role": role, "content": content})
    if tools:
        prompt = _tools_prompt(tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": rendered[0]["content"] + "\n\n" + prompt}
        else:
            rendered.insert(0, {"role": "system", "content": prompt})
    return rendered


class ToolCallParser:
    """Splits generated text into content and at most one tool call, as deltas."""

    def __init__(self) -> None:
        self.mode = "undecided"  # then "text" or "call"
        self.buffer = ""  # call text not yet emitted
        self.call: ToolCall | None = None
        self.closed = False
        self._logprobs: list[TokenLogprob] = []

    def feed(self, piece: str, logprobs: list[TokenLogprob]) -> list[Delta]:
        """Deltas for the next generated ``piece``."""
        self._logprobs.extend(logprobs)
        if self.mode == "text":
            return [self._delta(content=piece)]
        self.buffer += piece
        if self.mode == "undecided":
            # The grammar opens a call at the very first character or never.
            head = self.buffer[: len(TOOL_CALL_OPEN)]
            if not TOOL_CALL_OPEN.startswith(head):
                self.mode, text, self.buffer = "text", self.buffer, ""
                return [self._delta(content=text)]
            if len(head) < len(TOOL_CALL_OPEN):
                return []
            self.mode = "call"
        return self._advance(final=False)

    def _delta(self, **fields: Any) -> Delta:
        delta = Delta(**fields, logprobs=self._logprobs)
        self._logprobs = []
        return delta

    def _advance(self, *, final: bool) -> list[Delta]:
        deltas: list[Delta] = []
        if self.call is None:
            match = _HEADER.search(self.buffer)
            if match is None:
                return deltas
            self.call = ToolCall(id="call_" + uuid.uuid4().hex[:24], name=match[1], arguments="")
            self.buffer = self.buffer[match.end() :]
            deltas.append(self._delta(call_id=self.call.id, call_name=self.call.name))
        if final:
            trailer = _TRAILER.search(self.buffer)
            if trailer is not None:
                self.closed = True
                self.buffer = self.buffer[: trailer.start()]
            ready, self.buffer = self.buffer, ""
        else:
            ready = self.buffer[: max(0, len(self.buffer) - _HOLD)]
            self.buffer = self.buffer[len(ready) :]
        if ready:
            self.call.arguments += ready
            deltas.append(self._delta(arguments=ready))
        return deltas

    def finish(self) -> list[Delta]:
        """Deltas for what was held back, once generation has ended."""
        deltas = self._advance(final=True) if self.mode == "call" else []
        if self.mode == "undecided" and self.buffer:
            deltas.append(self._delta(content=self.buffer))
            self.buffer = ""
        if self._logprobs:
            deltas.append(self._delta())
        return deltas
