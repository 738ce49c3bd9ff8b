"""``modelport schema`` and ``modelport init``: the intent file's JSON Schema and templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelport.cli._common import err, out
from modelport.core.enums import Task
from modelport.core.errors import InvalidRequest
from modelport.core.intent import parse_intent
from modelport.core.intent_schema import intent_schema_text
from modelport.core.names import check_name, parse_model_ref

__all__ = ["register", "template"]

# What differs per task: an example model, the traffic fields that matter, and a block the
# task alone has (tokens for language models, batching for tabular and vision).
_MODELS = {
    Task.CHAT: "chat-small@champion",
    Task.COMPLETION: "my-llm:1",
    Task.EMBEDDING: "embed-small@champion",
    Task.ASR: "asr-small@champion",
    Task.VISION: "digits@champion",
    Task.TABULAR: "breast-cancer@champion",
    Task.CUSTOM: "my-model:1",
}
_OUTCOMES = {
    Task.CHAT: "Answer customers' support questions in the help widget",
    Task.COMPLETION: "Draft product descriptions for the catalogue team",
    Task.EMBEDDING: "Embed documents for the internal search index",
    Task.ASR: "Transcribe recorded support calls for quality review",
    Task.VISION: "Read handwritten digits on scanned forms",
    Task.TABULAR: "Flag applications for manual review before approval",
    Task.CUSTOM: "Say in one sentence what this endpoint is for",
}
_P95_MS = {
    Task.CHAT: 2000,
    Task.COMPLETION: 2000,
    Task.EMBEDDING: 200,
    Task.ASR: 5000,
    Task.VISION: 200,
    Task.TABULAR: 50,
    Task.CUSTOM: 500,
}
_TOKENS = """\
  avg_input_tokens: 500     # mean prompt length, in tokens (sizes memory and latency)
  avg_output_tokens: 200    # mean generated tokens per request
"""
_BATCHING = """\

# Server-side batching: single requests are run together, waiting at most max_wait_ms.
# Worth it when the peak is high; remove the block to answer each request on its own.
batching:
  max_batch_size: 32
  max_wait_ms: 5
"""


def template(task: str, endpoint: str | None = None, model: str | None = None) -> str:
    """A commented ``modelport.yaml`` for ``task`` that ``parse_intent`` accepts as it is."""
    try:
        kind = Task(task)
    except ValueError:
        raise InvalidRequest(
            f"task must be one of {', '.join(Task)}; got {task!r}", param="task"
        ) from None
    try:
        endpoint = check_name("endpoint", endpoint or f"my-{kind.value}")
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="endpoint") from None
    model = model or _MODELS[kind]
    try:
        parse_model_ref(model)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="model") from None
    tokens = _TOKENS if kind in (Task.CHAT, Task.COMPLETION) else ""
    batching = _BATCHING if kind in (Task.TABULAR, Task.VISION) else ""
    return f"""\
# modelport.yaml: what the endpoint '{endpoint}' should be. Check it with
#   modelport plan -f modelport.yaml     (where it would run, on what, at what cost)
# and deploy it with
#   modelport apply -f modelport.yaml
# Every field is described in the intent's JSON Schema: 'modelport schema -o
# intent.schema.json' writes it next to this file, and editors with the YAML language server
# then check and complete the file as it is typed, by the next line:
# yaml-language-server: $schema=./intent.schema.json

endpoint: {endpoint}
project: default
task: {kind.value}
model: {model}    # name:version, name@alias or name (its newest version)
outcome: "{_OUTCOMES[kind]}"

data:
  sensitivity: internal     # public | internal | confidential | restricted

traffic:
  peak_rps: 10              # requests per second at the busiest time
{tokens}
slo:
  p95_latency_ms: {_P95_MS[kind]}
  availability: 99.9        # percent of valid requests that succeed
  max_error_rate: 0.01      # a rollout step above this rolls back

environment: sandbox        # an environment's name, or auto to let the planner choose

resources:
  hardware: auto            # a type from 'modelport hardware', or auto
  replicas:
    min: 1                  # 0 lets the endpoint scale to zero when idle
    max: 2
  autoscaling:
    target_in_flight: 4     # requests in flight (and queued) per replica to aim at
    scale_up_after: 10s
    scale_down_after: 60s
{batching}
rollout:
  strategy: canary          # immediate | canary | blue-green | shadow
  steps: [10, 50, 100]
  interval: 2m

budget:
  monthly_usd: 500
"""


def register(app: typer.Typer) -> None:
    """Add ``schema`` and ``init`` to the main app."""
    app.command("schema")(schema)
    app.command("init")(init)


def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write it to this file instead of printing it."),
    ] = None,
) -> None:
    """Print the intent file's JSON Schema (draft 2020-12) for editors and CI checks."""
    text = intent_schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


def init(
    task: Annotated[
        str, typer.Option("--task", help=f"One of {', '.join(Task)}.", show_default=False)
    ],
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="The endpoint's name (my-<task>).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="The model: name:version or name@alias.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the template.")
    ] = Path("modelport.yaml"),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the file if it exists.")
    ] = False,
) -> None:
    """Write a commented modelport.yaml for a task, ready to edit."""
    try:
        text = template(task, endpoint, model)
    except InvalidRequest as exc:
        err.print(f"[red]error[/red] --{exc.details.get('param', 'task')}: {exc.message}")
        raise typer.Exit(2) from None
    parse_intent(text, filename=str(output))  # a template that does not parse is a bug here
    if output.exists() and not force:
        err.print(f"[red]error[/red] {output} exists: pass --force to overwrite it")
        raise typer.Exit(1)
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output} (task {task}): edit it, then 'modelport apply -f {output}'")
