"""A model version's drift profile, built from its reference data at registration.

The reference is a CSV file with a header row (the demos ship ``reference.csv``). Its columns
must match the model's signature, else registration fails with a 400 naming
``reference_digest`` and nothing is stored:

- tabular and custom models: one numeric input of shape ``[-1, K]`` takes K columns, in
  order; otherwise each numeric input of shape ``[-1]`` or ``[-1, 1]`` is the column of its
  own name. Every column is profiled.
- vision models: the pixel columns of the numeric input, profiled as each image's intensity
  mean and standard deviation (``image_mean``, ``image_std``).
- chat, completion, embedding and ASR models: only the columns ``input_tokens``,
  ``output_tokens`` and ``audio_seconds`` (length distributions).

An optional ``prediction`` column holds the model's answer for each row: it becomes the
reference distribution of predicted classes. Without it, a revision's first live outputs are
its reference (see ``RevisionDrift``).
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.observability.drift import (
    FeatureProfile,
    Profile,
    categorical_profile,
    image_statistics,
    numeric_profile,
)

__all__ = ["MAX_REFERENCE_ROWS", "PREDICTION_COLUMN", "reference_file", "reference_profile"]

PREDICTION_COLUMN = "prediction"
LENGTH_COLUMNS = ("input_tokens", "output_tokens", "audio_seconds")
MAX_REFERENCE_ROWS = 100_000  # rows beyond are not read: the profile is bounded anyway
_PARAM = "reference_digest"


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(f"reference data: {message}", param=_PARAM)


def reference_file(directory: Path) -> Path:
    """The one CSV file of a stored reference artifact."""
    if directory.is_file():
        return directory
    files = [p for p in directory.rglob("*") if p.is_file()]
    csvs = [p for p in files if p.suffix.lower() == ".csv"]
    if len(files) == 1:
        return files[0]
    if len(csvs) != 1:
        raise _fail(f"the artifact must hold one CSV file, found {len(files)} file(s)")
    return csvs[0]


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        rows = list(itertools.islice(reader, MAX_REFERENCE_ROWS))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(f"not a readable CSV file ({exc})") from None
    if not header or not rows:
        raise _fail("the CSV file needs a header row and at least one row of data")
    header = [name.strip() for name in header]
    if len(set(header)) != len(header):
        raise _fail("the header names a column twice")
    return header, rows


def _numbers(header: list[str], rows: list[list[str]], columns: list[str]) -> np.ndarray:
    positions = [header.index(c) for c in columns]
    matrix = np.empty((len(rows), len(columns)), dtype=np.float64)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise _fail(f"row {r + 2} has {len(row)} values, the header {len(header)}")
        for c, position in enumerate(positions):
            try:
                matrix[r, c] = float(row[position])
            except ValueError:
                raise _fail(
                    f"row {r + 2}, column '{columns[c]}': {row[position]!r} is not a number"
                ) from None
    return matrix


def _numeric_inputs(signature: Signature) -> list[TensorSpec]:
    return [spec for spec in signature.inputs if spec.datatype not in ("BYTES", "BOOL")]


def _layout(signature: Signature, columns: list[str]) -> tuple[str | None, list[str]]:
    """Which input tensor the columns belong to (``None``: one input per column)."""
    inputs = _numeric_inputs(signature)
    wide = [spec for spec in inputs if len(spec.shape) == 2 and spec.shape[1] != 1]
    if len(wide) == 1:
        spec = wide[0]
        if spec.shape[1] not in (-1, len(columns)):
            raise _fail(
                f"{len(columns)} column(s), but input '{spec.name}' of the model's signature "
                f"takes {spec.shape[1]}"
            )
        return spec.name, columns
    names = sorted(
        spec.name for spec in inputs if spec.shape in ([-1], [-1, 1]) or len(spec.shape) == 1
    )
    if names and sorted(columns) == names:
        return None, columns
    missing = sorted(set(names) - set(columns))
    extra = sorted(set(columns) - set(names))
    raise _fail(
        "the columns do not match the model's signature"
        + (f": missing {', '.join(missing)}" if missing else "")
        + (f"; not inputs of the model: {', '.join(extra[:10])}" if extra else "")
        + (f" (it takes {', '.join(names)})" if names else " (it takes no tabular input)")
    )


def reference_profile(path: Path, signature: Signature, task: str) -> Profile:
    """The drift profile of the reference CSV at ``path`` for a model of ``task`` with
    ``signature``; raises ``InvalidRequest`` (param ``reference_digest``) if they do not
    match."""
    header, rows = _read(reference_file(path))
    columns = [c for c in header if c != PREDICTION_COLUMN]
    outputs: list[FeatureProfile] = []
    if PREDICTION_COLUMN in header:
        at = header.index(PREDICTION_COLUMN)
        predicted = [row[at].strip() if at < len(row) else "" for row in rows]
        outputs.append(categorical_profile("predicted_class", predicted))
    if task in ("tabular", "custom", "vision"):
        if not columns:
            raise _fail("the CSV file has no feature columns")
        tensor, columns = _layout(signature, columns)
        matrix = _numbers(header, rows, columns)
        if task == "vision":
            means, stds = image_statistics(matrix)
            images = (numeric_profile("image_mean", means), numeric_profile("image_std", stds))
            return Profile("image", (*images, *outputs), tuple(columns), tensor, len(rows))
        features = [numeric_profile(c, matrix[:, i]) for i, c in enumerate(columns)]
        return Profile("tabular", (*features, *outputs), tuple(columns), tensor, len(rows))
    unknown = [c for c in columns if c not in LENGTH_COLUMNS]
    if unknown or not columns:
        raise _fail(
            f"a {task} model's reference takes the columns {', '.join(LENGTH_COLUMNS)}"
            + (f", not {', '.join(unknown[:10])}" if unknown else "")
        )
    matrix = _numbers(header, rows, columns)
    lengths = [numeric_profile(c, matrix[:, i], "usage") for i, c in enumerate(columns)]
    return Profile("lengths", (*lengths, *outputs), tuple(columns), None, len(rows))
