"""The compare metrics against scikit-learn and hand-computed values; evaluation files that
do not fit a signature are a 400 naming the column and line."""

from __future__ import annotations

import json
import random

import pytest
from sklearn.metrics import accuracy_score, f1_score

from modelport.control.evaluation import (
    accuracy,
    exact_match,
    macro_f1,
    parse_eval,
    tabular_set,
    token_f1,
    word_error_rate,
)
from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec


@pytest.mark.parametrize("seed", range(20))
def test_accuracy_and_macro_f1_match_scikit_learn(seed: int) -> None:
    rng = random.Random(seed)
    classes = rng.choice([["0", "1"], ["a", "b", "c"], ["x", "y", "z", "w"]])
    n = rng.randint(1, 60)
    truth = [rng.choice(classes) for _ in range(n)]
    predicted = [t if rng.random() < 0.7 else rng.choice(classes) for t in truth]
    assert accuracy(truth, predicted) == pytest.approx(accuracy_score(truth, predicted))
    assert macro_f1(truth, predicted) == pytest.approx(
        f1_score(truth, predicted, average="macro", zero_division=0)
    )


def test_macro_f1_by_hand() -> None:
    # class a: tp 1, fp 1, fn 1 -> 0.5; class b: tp 1, fp 1, fn 1 -> 0.5; class c: never right
    assert macro_f1(["a", "b", "c"], ["b", "a", "a"]) == 0.0
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "a"]) == pytest.approx(0.5)
    assert macro_f1(["a", "a", "b"], ["a", "a", "a"]) == pytest.approx((0.8 + 0.0) / 2)


def test_word_error_rate_by_hand() -> None:
    assert word_error_rate(["the cat sat"], ["the cat sat"]) == 0.0
    assert word_error_rate(["the cat sat"], ["the bat sat"]) == pytest.approx(1 / 3)  # sub
    assert word_error_rate(["the cat sat"], ["the sat"]) == pytest.approx(1 / 3)  # deletion
    assert word_error_rate(["a b"], ["a x b y"]) == pytest.approx(2 / 2)  # two insertions
    # Corpus-level: 1 error over 2 + 4 reference words, not the mean of 1/2 and 0/4.
    assert word_error_rate(
        ["hello world", "one two three four"], ["hello", "One, two three four."]
    ) == (pytest.approx(1 / 6))
    assert word_error_rate([""], ["extra"]) == float("inf")


def test_exact_match_and_token_f1_by_hand() -> None:
    assert exact_match(["The Eiffel Tower."], ["eiffel tower"]) == 1.0
    assert exact_match(["Paris", "Rome"], ["paris", "Milan"]) == 0.5
    # shared {eiffel, tower}: precision 2/3, recall 2/2 -> F1 0.8
    assert token_f1(["the Eiffel Tower"], ["Eiffel tower Paris"]) == pytest.approx(0.8)
    # "a" is an article: reference b b, shared 2 of 3 predicted -> P 2/3, R 1, F1 0.8
    assert token_f1(["a b b"], ["b b b"]) == pytest.approx(0.8)
    assert token_f1([""], [""]) == 1.0 and token_f1(["x"], [""]) == 0.0


def test_metrics_refuse_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 references but 1"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        macro_f1([], [])


_SIGNATURE = Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 3])])


def test_tabular_csv_and_jsonl_read_alike() -> None:
    csv_text = "a,b,c,label\n1,2,3,0\n4,5,6.5,1.0\n\n"
    lines = [{"a": 1, "b": 2, "c": 3, "label": 0}, {"a": 4, "b": 5, "c": 6.5, "label": "1"}]
    for text, fmt in ((csv_text, "csv"), ("\n".join(json.dumps(x) for x in lines), "jsonl")):
        columns, rows = parse_eval(text, fmt)  # type: ignore[arg-type]
        data = tabular_set(columns, rows, _SIGNATURE)
        assert data.rows == [[1, 2, 3], [4, 5, 6.5]] and data.labels == ["0", "1"]
        assert data.features == ["a", "b", "c"] and data.label_column == "label"


@pytest.mark.parametrize(
    ("text", "fmt", "column", "line", "words"),
    [
        ("a,b,c\n1,2,3\n", "csv", "label", 1, "label column"),
        ("a,b,label\n1,2,0\n", "csv", "label", 1, "takes 3 features"),
        ("a,b,c,d,label\n1,2,3,4,0\n", "csv", "d", 1, "takes 3 features"),
        ("a,b,c,target\n1,2,3,0\n1,x,3,1\n", "csv", "b", 3, "'x' is not a finite number"),
        ("a,b,c,label\n1,2,nan,0\n", "csv", "c", 2, "not a finite number"),
        ('{"a":1,"b":2,"c":3,"label":0}\n{"a":1,"b":2,"label":0}\n', "jsonl", "c", 2, "lacks"),
        ('{"a":1,"b":true,"c":3,"label":0}\n', "jsonl", "b", 1, "not a finite number"),
        ("a,b,c,label\n1,2,3,\n", "csv", "label", 2, "expected class is empty"),
    ],
)
def test_tabular_mistakes_name_column_and_line(
    text: str, fmt: str, column: str, line: int, words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        tabular_set(*parse_eval(text, fmt), _SIGNATURE)  # type: ignore[arg-type]
    assert caught.value.details["param"] == "eval"
    assert (caught.value.details.get("column"), caught.value.details.get("line")) == (column, line)


@pytest.mark.parametrize(
    ("text", "fmt", "words"),
    [
        ("", "csv", "empty"),
        ("a,label\n", "csv", "no examples"),
        ("a,a,label\n1,2,3\n", "csv", "twice"),
        ("a,b,c,label\n1,2,3\n", "csv", "line 2 .* 3 values"),
        ("[1, 2]\n", "jsonl", "JSON object"),
        ("{nope\n", "jsonl", "line 1 .*not JSON"),
    ],
)
def test_malformed_files(text: str, fmt: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        parse_eval(text, fmt)  # type: ignore[arg-type]
    assert caught.value.details["param"] == "eval"
