"""Evaluation sets and the metrics ``modelport compare`` scores candidates with.

The metrics are small enough to write here rather than pull scikit-learn or jiwer into the
server: accuracy and macro F1 for classifiers, word error rate for speech, exact match and a
token-overlap F1 (SQuAD's) for text. tests/unit/test_evaluation.py checks them against
scikit-learn and hand-computed values.

An evaluation file is CSV (a header line, then one example a line) or JSON Lines (one object a
line). Every mistake in it is an ``InvalidRequest`` naming the column and the line.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature

__all__ = [
    "LABEL_COLUMNS",
    "MAX_EVAL_ROWS",
    "EvalRow",
    "SpeechSet",
    "TabularSet",
    "TextSet",
    "accuracy",
    "exact_match",
    "macro_f1",
    "parse_eval",
    "speech_set",
    "tabular_set",
    "text_set",
    "token_f1",
    "word_error_rate",
]

#: Column names taken as a tabular example's expected class, first found wins.
LABEL_COLUMNS = ("label", "target", "class", "y")
#: An evaluation set is scored in one request's time: larger sets belong in a batch job.
MAX_EVAL_ROWS = 10_000
_PARAM = "eval"


# -- metrics ----------------------------------------------------------------------------------


def accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """The share of examples whose prediction equals the truth."""
    _same_length(truth, predicted)
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """The unweighted mean over classes of each class's F1 (scikit-learn's
    ``f1_score(average="macro")``): a rare class counts as much as a common one. The classes
    are those in either sequence; a class with no true and no predicted example scores 0, as
    scikit-learn's ``zero_division=0``."""
    _same_length(truth, predicted)
    classes = set(truth) | set(predicted)
    scores = []
    for label in classes:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) over every reference
    summed, divided by the reference words summed (not a mean of per-line rates, which would
    weigh a two-word line like a fifty-word one). Words are compared lower-cased, without
    punctuation. Can exceed 1 when the hypotheses insert many words."""
    _same_length(references, hypotheses)
    errors = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = _normal(reference).split(), _normal(hypothesis).split()
        errors += _edit_distance(ref, hyp)
        words += len(ref)
    if words == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / words


def exact_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    """The share of predictions equal to their reference once both are normalised (lower
    case, punctuation and the articles a/an/the dropped, whitespace collapsed), as SQuAD."""
    _same_length(references, predictions)
    same = sum(
        _normal(r, articles=True) == _normal(p, articles=True)
        for r, p in zip(references, predictions, strict=True)
    )
    return same / len(references)


def token_f1(references: Sequence[str], predictions: Sequence[str]) -> float:
    """The mean over examples of the F1 of the normalised tokens the prediction shares with
    its reference (a bag of words: each shared token counted as often as it is in both), as
    SQuAD's. Two empty texts agree (1.0); one empty and one not score 0."""
    _same_length(references, predictions)
    total = 0.0
    for reference, prediction in zip(references, predictions, strict=True):
        ref = _normal(reference, articles=True).split()
        pred = _normal(prediction, articles=True).split()
        if not ref or not pred:
            total += float(ref == pred)
            continue
        shared = sum((Counter(ref) & Counter(pred)).values())
        if shared:
            precision, recall = shared / len(pred), shared / len(ref)
            total += 2 * precision * recall / (precision + recall)
    return total / len(references)


def _same_length(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} references but {len(b)} predictions")
    if not a:
        raise ValueError("no examples to score")


_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normal(text: str, *, articles: bool = False) -> str:
    text = text.lower().translate(_PUNCTUATION)
    if articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between word sequences, one row of the table at a time."""
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
            )
        previous = current
    return previous[-1]


# -- evaluation files -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One example: its fields by column, and the file line it came from (for errors)."""

    line: int
    fields: Mapping[str, Any]


def parse_eval(text: str, fmt: Literal["csv", "jsonl"]) -> tuple[list[str], list[EvalRow]]:
    """The columns (CSV: the header's; JSONL: the first object's keys) and the examples.
    Every row must have exactly the columns; at least one example, at most MAX_EVAL_ROWS."""
    rows = _csv(text) if fmt == "csv" else _jsonl(text)
    columns, examples = rows
    if not examples:
        raise InvalidRequest("the evaluation file has no examples", param=_PARAM)
    if len(examples) > MAX_EVAL_ROWS:
        raise InvalidRequest(
            f"the evaluation file has {len(examples)} examples; at most {MAX_EVAL_ROWS} are "
            "scored in one comparison",
            param=_PARAM,
        )
    return columns, examples


def _csv(text: str) -> tuple[list[str], list[EvalRow]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidRequest("the evaluation CSV is empty: it needs a header", param=_PARAM)
        columns = [name.strip() for name in header]
        _check_columns(columns, 1)
        examples = []
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue  # a blank line (a trailing newline, most often)
            if len(values) != len(columns):
                raise InvalidRequest(
                    f"line {line} of the evaluation CSV has {len(values)} values; the header "
                    f"has {len(columns)} columns",
                    param=_PARAM,
                    line=line,
                )
            examples.append(EvalRow(line, dict(zip(columns, values, strict=True))))
    except csv.Error as exc:
        raise InvalidRequest(
            f"line {reader.line_num} of the evaluation CSV: {exc}", param=_PARAM
        ) from exc
    return columns, examples


def _jsonl(text: str) -> tuple[list[str], list[EvalRow]]:
    columns: list[str] | None = None
    examples: list[EvalRow] = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidRequest(
                f"line {line} of the evaluation file is not JSON: {exc}", param=_PARAM, line=line
            ) from exc
        if not isinstance(value, dict):
            raise InvalidRequest(
                f"line {line} of the evaluation file must be a JSON object", param=_PARAM, line=line
            )
        if columns is None:
            columns = list(value)
            _check_columns(columns, line)
        elif set(value) != set(columns):
            missing = [c for c in columns if c not in value]
            extra = [c for c in value if c not in columns]
            which = f"lacks column '{missing[0]}'" if missing else f"has column '{extra[0]}'"
            raise InvalidRequest(
                f"line {line} of the evaluation file {which}, unlike line {examples[0].line}",
                param=_PARAM,
                line=line,
                column=(missing or extra)[0],
            )
        examples.append(EvalRow(line, value))
    return columns or [], examples


def _check_columns(columns: list[str], line: int) -> None:
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise InvalidRequest(
                f"line {line} of the evaluation file has a column without a name",
                param=_PARAM,
                line=line,
            )
        if name in seen:
            raise InvalidRequest(
                f"line {line} of the evaluation file names column '{name}' twice",
                param=_PARAM,
                line=line,
                column=name,
            )
        seen.add(name)


# -- tabular sets -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TabularSet:
    """A tabular evaluation set checked against a signature: one feature row per example
    (the values of the features in the file's column order) and its expected label."""

    input_name: str
    datatype: str
    features: list[str]
    label_column: str
    rows: list[list[float]]
    labels: list[str]


def tabular_set(columns: list[str], examples: list[EvalRow], signature: Signature) -> TabularSet:
    """Check the columns against a tabular signature (ONE input tensor ``[-1, F]``): a label
    column (one of LABEL_COLUMNS) and F feature columns, every value a number. The features
    are the other columns in the file's order: a tensor's columns have no names to check."""
    label = next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None:
        raise InvalidRequest(
            f"the evaluation file needs a label column ({' or '.join(LABEL_COLUMNS)}) with "
            f"each example's expected class; its columns are {', '.join(columns[:10])}",
            param=_PARAM,
            column="label",
            line=1,
        )
    inputs = [spec for spec in signature.inputs if not spec.optional] or signature.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise InvalidRequest(
            "compare scores tabular models with one input tensor of shape [rows, features]; "
            f"this one takes {[(s.name, s.shape) for s in signature.inputs]}",
            param="candidates",
        )
    spec = inputs[0]
    features = [c for c in columns if c != label]
    width = spec.shape[1]
    if width != -1 and len(features) != width:
        raise InvalidRequest(
            f"the model's input '{spec.name}' takes {width} features; the evaluation file has "
            f"{len(features)} feature columns besides '{label}'",
            param=_PARAM,
            column=features[-1] if len(features) > width else label,
            line=1,
        )
    rows, labels = [], []
    for example in examples:
        row = []
        for column in features:
            row.append(_number(example.fields[column], column, example.line))
        rows.append(row)
        labels.append(label_text(example.fields[label], label, example.line))
    return TabularSet(spec.name, spec.datatype, features, label, rows, labels)


def _number(value: Any, column: str, line: int) -> float:
    if isinstance(value, bool):
        value = "bool"  # not a number, though Python counts it as one
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
        value = str(value)[:40]
    else:
        if math.isfinite(number):
            return number
    raise InvalidRequest(
        f"line {line}, column '{column}': {value!r} is not a finite number",
        param=_PARAM,
        column=column,
        line=line,
    )


def label_text(value: Any, column: str = "label", line: int = 0) -> str:
    """A class as text, so that ``1``, ``1.0`` and ``"1"`` are the same class, whether from a
    CSV cell, a JSON number or a model's INT64 output."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if number.is_integer():
            return str(int(number))
        if text:
            return text
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise InvalidRequest(
        f"line {line}, column '{column}': the expected class is empty or not a value",
        param=_PARAM,
        column=column,
        line=line,
    )


# -- text and speech sets ---------------------------------------------------------------------

#: The prompt of a text example, and what it should answer (first found wins).
PROMPT_COLUMNS = ("prompt", "input", "question")
ANSWER_COLUMNS = ("expected", "reference", "answer", "output")
#: A speech example: its recording (base64 of a WAV or FLAC file) and its transcript.
AUDIO_COLUMNS = ("audio", "audio_base64")
TRANSCRIPT_COLUMNS = ("text", "transcript", "reference", "expected")


@dataclass(frozen=True, slots=True)
class TextSet:
    """Prompts and the answers expected of them (chat and completion models)."""

    prompt_column: str
    answer_column: str
    prompts: list[str]
    answers: list[str]
    lines: list[int]


@dataclass(frozen=True, slots=True)
class SpeechSet:
    """Recordings and their transcripts (speech recognition models)."""

    audio_column: str
    transcript_column: str
    audio: list[bytes]
    transcripts: list[str]
    lines: list[int]


def _column(columns: list[str], names: tuple[str, ...], what: str) -> str:
    found = next((c for c in names if c in columns), None)
    if found is None:
        raise InvalidRequest(
            f"the evaluation file needs a column with {what} ({' or '.join(names)}); its "
            f"columns are {', '.join(columns[:10])}",
            param=_PARAM,
            column=names[0],
            line=1,
        )
    return found


def _text(value: Any, column: str, line: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(
            f"line {line}, column '{column}': must be text", param=_PARAM, column=column, line=line
        )
    return value


def text_set(columns: list[str], examples: list[EvalRow]) -> TextSet:
    """A prompt column and an expected-answer column, both text, the prompt not empty."""
    prompt = _column(columns, PROMPT_COLUMNS, "each example's prompt")
    answer = _column(columns, ANSWER_COLUMNS, "each example's expected answer")
    prompts, answers = [], []
    for example in examples:
        text = _text(example.fields[prompt], prompt, example.line)
        if not text.strip():
            raise InvalidRequest(
                f"line {example.line}, column '{prompt}': the prompt is empty",
                param=_PARAM,
                column=prompt,
                line=example.line,
            )
        prompts.append(text)
        answers.append(_text(example.fields[answer], answer, example.line))
    return TextSet(prompt, answer, prompts, answers, [e.line for e in examples])


def speech_set(columns: list[str], examples: list[EvalRow]) -> SpeechSet:
    """An audio column (base64 of a WAV or FLAC file) and a transcript column."""
    audio = _column(columns, AUDIO_COLUMNS, "each example's recording, base64")
    transcript = _column(columns, TRANSCRIPT_COLUMNS, "each example's transcript")
    recordings, transcripts = [], []
    for example in examples:
        encoded = _text(example.fields[audio], audio, example.line)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(
                f"line {example.line}, column '{audio}': not base64 ({exc})",
                param=_PARAM,
                column=audio,
                line=example.line,
            ) from exc
        if not data:
            raise InvalidRequest(
                f"line {example.line}, column '{audio}': the recording is empty",
                param=_PARAM,
                column=audio,
                line=example.line,
            )
        recordings.append(data)
        transcripts.append(_text(example.fields[transcript], transcript, example.line))
    return SpeechSet(audio, transcript, recordings, transcripts, [e.line for e in examples])
