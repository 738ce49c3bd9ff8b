"""``modelport recommend``: proposed intent changes from traffic, latency and cost."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from modelport.cli._common import Token, Url, _client, err, out

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the main app."""
    app.command("recommend")(recommend)


def recommend(
    endpoint: Annotated[
        str | None, typer.Argument(help="One endpoint (default: every one you may read).")
    ] = None,
    days: Annotated[float, typer.Option("--days", help="The window, in days (up to 90).")] = 7.0,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """Propose changes to endpoints' intents from their traffic, latency and cost: fewer or
    more replicas, other hardware, batching, the SLO. Nothing is applied: edit the file and
    'modelport apply' it."""
    if format not in ("table", "json"):
        err.print(f"[red]--format must be table or json[/red]; got {format!r}")
        raise typer.Exit(2)
    with _client(url, token) as client:
        answer = client.recommendations(endpoint, days=days)
    if format == "json":
        out.print_json(json.dumps(answer))
        return
    out.print(
        f"recommendations from {answer['since']} to {answer['until']} ({answer['days']:g} days)",
        highlight=False,
    )
    for one in answer["endpoints"]:
        _print_endpoint(one)
    if not answer["endpoints"]:
        out.print("no endpoint you may read")


def _print_endpoint(one: dict[str, Any]) -> None:
    seen = one["observed"]
    p95 = "-" if seen["p95_ms"] is None else f"{seen['p95_ms']:.1f} ms"
    out.print(
        f"\n[bold]{one['endpoint']}[/bold] ({one['model']} on {one['hardware']}): "
        f"{seen['requests']} requests, peak {seen['peak_rps']:.3g} rps, p95 {p95}, "
        f"{seen['errors']} errors; sized on: {one['basis']}",
        highlight=False,
    )
    if one.get("outcome"):
        out.print(f"  outcome: {one['outcome']}", highlight=False)
    # One block per proposal rather than a table: reasons are sentences and diffs are long.
    for proposal in one["proposals"]:
        effect = proposal["effect"]
        out.print(
            f"  [bold]{proposal['kind']}[/bold]: monthly USD "
            f"{_number(effect.get('monthly_usd'), signed=True)}, p95 "
            f"{_number(effect.get('p95_ms'))} ms",
            highlight=False,
        )
        for change in proposal["diff"]:
            out.print(f"    {_change(change)}", highlight=False, markup=False)
        out.print(f"    why: {proposal['reason']}", highlight=False, markup=False)
    if not one["proposals"]:
        out.print("  nothing to propose")
    for note in one["notes"]:
        out.print(f"  note: {note}", highlight=False)


def _change(change: dict[str, Any]) -> str:
    return f"{change['field']}: {_value(change['before'])} -> {_value(change['after'])}"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.2f}" if signed else f"{value:,.1f}"
