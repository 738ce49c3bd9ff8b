"""``modelport compare``: candidates scored side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from modelport.cli._common import Token, Url, _client, _print, err, out

__all__ = ["register"]

Format = Annotated[
    Literal["table", "json"], typer.Option("--format", help="table, or json for scripts.")
]


def compare(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="The intent file.", exists=True, dir_okay=False)
    ],
    candidates: Annotated[
        str,
        typer.Option(
            "--candidates",
            help="Comma-separated NAME:VERSION or NAME@ALIAS, e.g. m:1,m:2,m@champion.",
        ),
    ],
    eval_file: Annotated[
        Path,
        typer.Option(
            "--eval",
            help="Evaluation set: CSV with a header, or JSON Lines (.jsonl). tabular: feature "
            "columns and a label column (label, target, class or y); chat/completion: prompt "
            "and expected; asr: audio (base64 WAV/FLAC) and text.",
            exists=True,
            dir_okay=False,
        ),
    ],
    eval_format: Annotated[
        Literal["auto", "csv", "jsonl"],
        typer.Option("--eval-format", help="auto: from the file's extension."),
    ] = "auto",
    duration: Annotated[
        float, typer.Option(help="Seconds of latency test per candidate.", min=0.5, max=30)
    ] = 3.0,
    concurrency: Annotated[
        int, typer.Option(help="Clients in the latency test's closed loop.", min=1, max=32)
    ] = 2,
    output: Format = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """Run each candidate in a temporary replica, score it on the evaluation set, time it,
    and judge it against the intent's SLO and budget; ranked best first. Stored (modelport
    comparisons ENDPOINT)."""
    names = [c.strip() for c in candidates.split(",") if c.strip()]
    if not names:
        err.print("[red]--candidates names no candidate[/red]")
        raise typer.Exit(1)
    fmt = eval_format
    if fmt == "auto":
        fmt = "jsonl" if eval_file.suffix.lower() in (".jsonl", ".ndjson") else "csv"
    with _client(url, token) as client:
        result = client.compare(
            file.read_text(),
            names,
            eval_file.read_text(),
            eval_format=fmt,
            filename=file.name,
            duration_s=duration,
            concurrency=concurrency,
        )
    if output == "json":
        _print(result, True)
    else:
        show(result)


def comparisons(
    endpoint: str,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=200)] = 5,
    output: Format = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """An endpoint's stored comparisons, newest first."""
    with _client(url, token) as client:
        results = client.comparisons(endpoint, limit=limit)
    if output == "json":
        _print(results, True)
        return
    if not results:
        out.print(f"no comparisons for '{endpoint}'", highlight=False)
    for result in results:
        show(result)


_TITLES = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "word_error_rate": "WER",
}


def _num(value: Any, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "[red]no[/red]")


def show(result: dict[str, Any]) -> None:
    """One comparison as a table, its candidates ranked."""
    slo = result.get("slo", {}).get("p95_latency_ms")
    budget = result.get("budget", {}).get("monthly_usd")
    peak = result.get("traffic", {}).get("peak_rps")
    title = (
        f"comparison {result['id']} for {result['endpoint']}: {result['eval']['rows']} examples, "
        f"on {result['hardware']}"
    )
    metrics = result.get("metrics") or list(result["candidates"][0]["metrics"])
    table = Table(
        "#",
        "candidate",
        *(_TITLES.get(name, name) for name in metrics),
        "p50 ms",
        "p95 ms",
        "rps",
        "$/1k req",
        "$/month at peak",
        f"SLO (p95 <= {_num(slo, 0)} ms)",
        f"budget (${_num(budget, 0)})",
        title=title,
    )
    for row in result["candidates"]:
        latency = row["latency"]
        table.add_row(
            str(row["rank"]),
            row["candidate"],
            *(_num(row["metrics"].get(name), 4) for name in metrics),
            _num(latency["p50_ms"], 2),
            _num(latency["p95_ms"], 2),
            _num(latency["throughput_rps"], 1),
            _num(row["cost_per_1k_usd"], 6),
            _num(row["monthly_usd_at_peak"], 2),
            _yes(row["meets_slo"]),
            _yes(row["meets_budget"]),
        )
    out.print(table)
    bases = {row["cost_basis"] for row in result["candidates"] if row["cost_basis"]}
    for basis in sorted(bases):
        out.print(f"cost: {basis}" + (f"; peak {peak:g} rps" if peak else ""), highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("compare")(compare)
    app.command("comparisons")(comparisons)
