"""``modelport init``: a commented template per task that parses as it is written."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from modelport.cli import app
from modelport.cli._intent import template
from modelport.core.enums import Task
from modelport.core.errors import InvalidRequest
from modelport.core.intent import parse_intent
from modelport.core.intent_schema import intent_schema

runner = CliRunner()


@pytest.mark.parametrize("task", list(Task))
def test_every_task_writes_a_template_that_parses(task: Task, tmp_path: Path) -> None:
    target = tmp_path / "modelport.yaml"
    result = runner.invoke(app, ["init", "--task", task.value, "-o", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    intent = parse_intent(text)
    assert intent.task == task
    assert intent.endpoint == f"my-{task.value}"
    assert intent.outcome  # every template says what the endpoint is for
    assert "# yaml-language-server: $schema=" in text
    assert text.count("#") > 10  # commented, not a bare dump
    assert not list(
        jsonschema.Draft202012Validator(intent_schema()).iter_errors(yaml.safe_load(text))
    )
    # Fields only some tasks have.
    language = task in (Task.CHAT, Task.COMPLETION)
    assert (intent.traffic.avg_input_tokens is not None) == language
    assert (intent.batching is not None) == (task in (Task.TABULAR, Task.VISION))


def test_endpoint_and_model_are_used(tmp_path: Path) -> None:
    target = tmp_path / "x.yaml"
    args = ["init", "--task", "tabular", "--endpoint", "fraud", "--model", "fraud-gbm:3"]
    result = runner.invoke(app, [*args, "-o", str(target)])
    assert result.exit_code == 0, result.output
    intent = parse_intent(target.read_text(encoding="utf-8"))
    assert (intent.endpoint, intent.model) == ("fraud", "fraud-gbm:3")


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    target = tmp_path / "modelport.yaml"
    target.write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["init", "--task", "chat", "-o", str(target)])
    assert result.exit_code == 1
    assert "--force" in result.output
    assert target.read_text(encoding="utf-8") == "mine\n"
    result = runner.invoke(app, ["init", "--task", "chat", "-o", str(target), "--force"])
    assert result.exit_code == 0, result.output
    assert parse_intent(target.read_text(encoding="utf-8")).task == Task.CHAT


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--task", "translation"], "--task"),
        (["--task", "chat", "--endpoint", "Not A Name"], "--endpoint"),
        (["--task", "chat", "--model", "bad model:x"], "--model"),
    ],
)
def test_bad_options_are_named_and_nothing_is_written(
    args: list[str], field: str, tmp_path: Path
) -> None:
    target = tmp_path / "modelport.yaml"
    result = runner.invoke(app, ["init", *args, "-o", str(target)])
    assert result.exit_code == 2
    assert field in result.output
    assert not target.exists()


def test_template_names_the_field_it_refuses() -> None:
    with pytest.raises(InvalidRequest) as caught:
        template("translation")
    assert caught.value.details["param"] == "task"
    assert "chat, completion" in caught.value.message
