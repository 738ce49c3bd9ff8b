"""``modelport usage``: what was used, per team, project, customer, endpoint, revision or key."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelport.cli._common import Token, Url, _client, err, out

__all__ = ["usage"]

_FORMATS = ("table", "json", "csv")
_GROUPS = {"revision": ["endpoint", "revision"], "key": ["key_id"]}
_COLUMNS = [
    ("requests", "requests"),
    ("errors", "errors"),
    ("input_tokens", "in tokens"),
    ("output_tokens", "out tokens"),
    ("audio_seconds", "audio s"),
    ("images", "images"),
    ("rows", "rows"),
    ("latency_ms_mean", "mean ms"),
    ("cost_usd", "cost USD"),
]


_UNITS = frozenset({"input_tokens", "output_tokens", "audio_seconds", "images", "rows"})


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name == "cost_usd":
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def usage(
    by: Annotated[
        str, typer.Option(help="team, project, customer, endpoint, revision or key.")
    ] = "endpoint",
    since: Annotated[str, typer.Option(help="90m, 24h, 7d or an ISO-8601 time.")] = "24h",
    until: Annotated[
        str | None, typer.Option(help="Same forms as --since (default: now).", show_default=False)
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    team: Annotated[str | None, typer.Option(show_default=False)] = None,
    project: Annotated[str | None, typer.Option(show_default=False)] = None,
    customer: Annotated[str | None, typer.Option(show_default=False)] = None,
    endpoint: Annotated[str | None, typer.Option(show_default=False)] = None,
    revision: Annotated[str | None, typer.Option(show_default=False)] = None,
    key: Annotated[str | None, typer.Option(show_default=False)] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Usage (requests, tokens, audio, images, rows, cost) summed per --by, from rollups."""
    if format not in _FORMATS:
        err.print(f"[red]--format must be table, json or csv[/red]; got {format!r}")
        raise typer.Exit(2)
    filters = {
        name: value
        for name, value in (
            ("team", team),
            ("project", project),
            ("customer", customer),
            ("endpoint", endpoint),
            ("revision", revision),
            ("key", key),
        )
        if value is not None
    }
    with _client(url, token) as client:
        if format == "csv":
            out.file.write(client.usage_report_csv(by, since, until, **filters))
            return
        report = client.usage_report(by, since, until, **filters)
    if format == "json":
        out.print_json(data=report)
        return
    group = _GROUPS.get(by, [by])
    total = report["total"]
    # Units nobody used (audio on a tabular endpoint...) only widen the table: left out.
    columns = [(n, t) for n, t in _COLUMNS if n not in _UNITS or total[n]]
    # Why each endpoint exists, where its intent says so.
    outcome = [("outcome", "outcome")] if any(r.get("outcome") for r in report["rows"]) else []
    table = Table(*group, *(title for _, title in columns + outcome))
    for row in report["rows"]:
        table.add_row(
            *(row[name] or '""' for name in group),
            *(_cell(name, row[name]) for name, _ in columns),
            *(row.get("outcome") or "" for _ in outcome),
        )
    table.add_row(
        "total",
        *([""] * (len(group) - 1)),
        *(_cell(name, total[name]) for name, _ in columns),
        *("" for _ in outcome),
    )
    out.print(f"usage by {by} from {report['since']} to {report['until']}", highlight=False)
    out.print(table)
