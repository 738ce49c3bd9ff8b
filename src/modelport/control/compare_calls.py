"""Talking to one ``modelport compare`` candidate's temporary replica: its examples sent as
the gateway would send them, its answers read back as text (a class, a reply, a
transcript), the usage units it reports, and a bounded closed-loop latency test."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from modelport.control.evaluation import SpeechSet, TabularSet, TextSet, label_text
from modelport.core.errors import InvalidRequest, ModelportError, Unavailable
from modelport.core.replica import ReplicaSpec
from modelport.core.signature import DATATYPES
from modelport.core.usage import UNITS_HEADER, Units

__all__ = ["Caller", "Candidate", "EvalSet", "expected", "time_calls"]

EvalSet = TabularSet | TextSet | SpeechSet

# Scored in requests of this many rows: well under the replica's max_request_rows, and small
# enough that one request's JSON stays far below its body limit.
_SCORE_BATCH = 256
_TEXT_TASKS = ("chat", "completion")


@dataclass(frozen=True, slots=True)
class Candidate:
    ref: str
    model: str
    version: int
    runtime: str
    spec: ReplicaSpec
    data: EvalSet


def expected(data: EvalSet) -> list[str]:
    if isinstance(data, TabularSet):
        return data.labels
    if isinstance(data, TextSet):
        return data.answers
    return data.transcripts


class Caller:
    """Sends one candidate's replica its examples, as the gateway would, and reads its
    answers as text: a class, a reply or a transcript. Sums the usage units the replica
    reports while scoring, for pricing."""

    def __init__(
        self, client: httpx.AsyncClient, candidate: Candidate, task: str, max_tokens: int
    ) -> None:
        self.client = client
        self.candidate = candidate
        self.task = task
        self.max_tokens = max_tokens
        self._units: dict[str, float] = dict.fromkeys(
            ("rows", "input_tokens", "output_tokens", "audio_seconds", "images"), 0
        )
        self._examples = 0

    @property
    def size(self) -> int:
        data = self.candidate.data
        return len(data.rows) if isinstance(data, TabularSet) else len(expected(data))

    async def score(self) -> list[str]:
        """Every example's answer, in order: tabular rows in requests of _SCORE_BATCH."""
        predicted: list[str] = []
        step = _SCORE_BATCH if isinstance(self.candidate.data, TabularSet) else 1
        for start in range(0, self.size, step):
            answers, units = await self.call(start, min(step, self.size - start))
            predicted += answers
            self._examples += len(answers)
            for name in self._units:
                self._units[name] += getattr(units, name)
        return predicted

    def units_per_1k(self) -> Units:
        """What 1,000 one-example requests use, from the mean of those scored."""
        n = max(self._examples, 1)
        units = self._units
        return Units(
            requests=1000,
            rows=round(1000 * units["rows"] / n),
            input_tokens=round(1000 * units["input_tokens"] / n),
            output_tokens=round(1000 * units["output_tokens"] / n),
            audio_seconds=round(1000 * units["audio_seconds"] / n, 3),
            images=round(1000 * units["images"] / n),
        )

    async def call(self, start: int, count: int) -> tuple[list[str], Units]:
        """One request of ``count`` examples from ``start``: their answers and units."""
        data, ref, spec = self.candidate.data, self.candidate.ref, self.candidate.spec
        line: int | None = None
        try:
            if isinstance(data, TabularSet):
                path = f"/v2/models/{spec.endpoint}/infer"
                response = await self.client.post(
                    path, json=_tabular_body(data, data.rows[start : start + count])
                )
            elif isinstance(data, TextSet):
                line = data.lines[start]
                path, body = self._text_request(data.prompts[start])
                response = await self.client.post(path, json=body)
            else:
                line = data.lines[start]
                response = await self.client.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("audio", data.audio[start])},
                    data={"response_format": "json"},
                )
        except httpx.HTTPError as exc:
            raise Unavailable(f"candidate '{ref}' did not answer: {exc!r}", candidate=ref) from exc
        if response.status_code != 200:
            _refused(response, ref, line)
        answer = response.json()
        units = Units.decode(response.headers.get(UNITS_HEADER.decode(), "").encode())
        if isinstance(data, TabularSet):
            return _labels(answer, count, ref), units
        if isinstance(data, TextSet):
            choice = (answer.get("choices") or [{}])[0]
            text = choice.get("message", {}).get("content") if "message" in choice else None
            return [str(text if text is not None else choice.get("text") or "")], units
        return [str(answer.get("text", ""))], units

    def _text_request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.candidate.spec.endpoint,
            "max_tokens": self.max_tokens,
            "temperature": 0,  # the likeliest answer: scores that do not change run to run
        }
        if self.task == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            return "/v1/chat/completions", body
        body["prompt"] = prompt
        return "/v1/completions", body


def _refused(response: httpx.Response, ref: str, line: int | None) -> None:
    """A replica's refusal of one example (a prompt past the context, a recording it cannot
    decode) is the evaluation file's mistake: a 400 naming its line. Anything else, or a
    refusal of checked tabular rows, is the candidate's failure."""
    try:
        error = response.json().get("error", {})
        message = error.get("message", "") if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text[:300]
    if line is not None and 400 <= response.status_code < 500 and response.status_code != 429:
        raise InvalidRequest(
            f"line {line} of the evaluation file: candidate '{ref}' refused it: {message}",
            param="eval",
            line=line,
            candidate=ref,
        )
    raise Unavailable(
        f"candidate '{ref}' answered {response.status_code}: {message[:300]}", candidate=ref
    )


def _tabular_body(data: TabularSet, rows: Sequence[list[float]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    if DATATYPES.get(data.datatype, "").startswith(("int", "uint")):
        flat = [int(value) for value in flat]
    return {
        "inputs": [
            {
                "name": data.input_name,
                "shape": [len(rows), len(data.features)],
                "datatype": data.datatype,
                "data": flat,
            }
        ]
    }


def _labels(answer: dict[str, Any], rows: int, ref: str) -> list[str]:
    """Each row's predicted class: an output named like a label, else the arg-max of a
    [rows, classes] output (probabilities or scores)."""
    outputs = {o["name"]: o for o in answer.get("outputs", [])}
    for name in ("label", "labels", "output_label", "class", "classes"):
        output = outputs.get(name)
        if output is not None and len(output["data"]) == rows:
            return [label_text(value) for value in output["data"]]
    for output in outputs.values():
        shape = output.get("shape", [])
        if len(shape) == 2 and shape[0] == rows and shape[1] > 1:
            width, data = shape[1], output["data"]
            rows_of = [data[i * width : (i + 1) * width] for i in range(rows)]
            return [str(row.index(max(row))) for row in rows_of]
    raise Unavailable(
        f"candidate '{ref}' answered no output that holds a class per row "
        f"(outputs: {', '.join(outputs) or 'none'})",
        candidate=ref,
    )


async def time_calls(caller: Caller, duration_s: float, concurrency: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients each send one single-example request after
    another (the evaluation examples in turn) until ``duration_s`` is up; the requests in
    flight then finish (each bounded by the request timeout)."""
    size = caller.size
    latencies: list[float] = []
    errors = 0
    started = time.monotonic()
    deadline = started + duration_s

    async def loop(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                await caller.call(i % size, 1)
            except ModelportError:
                errors += 1
            else:
                latencies.append((time.perf_counter() - sent) * 1000)
            i += concurrency

    await asyncio.gather(*(loop(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_s": round(elapsed, 3),
        "concurrency": concurrency,
        "p50_ms": _percentile(ordered, 0.50),
        "p95_ms": _percentile(ordered, 0.95),
        "throughput_rps": round(len(latencies) / elapsed, 3) if elapsed > 0 else 0.0,
    }


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None without any)."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
