"""``modelport prices set|list`` and ``modelport cost``: the price catalog and cost reports."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

import typer
from rich.table import Table

from modelport.cli._common import Token, Url, _client, _print, err, out
from modelport.observability.pricing import format_usd

__all__ = ["register"]

prices_app = typer.Typer(
    no_args_is_help=True, help="Set and list versioned prices (per unit and per hardware hour)."
)

_PRICE_COLUMNS = ["kind", "target", "unit", "usd", "effective_from", "in_force"]
Format = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def register(app: typer.Typer) -> None:
    """Add ``prices`` and ``cost`` to the main app."""
    app.add_typer(prices_app, name="prices")
    app.command("cost")(cost)


def _parse_prices(pairs: list[str]) -> dict[str, str]:
    prices = {}
    for pair in pairs:
        unit, sep, usd = pair.partition("=")
        if not sep or not unit or not usd:
            err.print(f"[red]error[/red] {pair!r}: write UNIT=USD, e.g. per_1k_rows=0.002")
            raise typer.Exit(1)
        prices[unit.strip()] = usd.strip()
    return prices


@prices_app.command("set")
def prices_set(
    prices: Annotated[
        list[str], typer.Argument(help="UNIT=USD pairs, e.g. per_1k_rows=0.002 or per_hour=0.5.")
    ],
    endpoint: Annotated[str | None, typer.Option(help="Price an endpoint.")] = None,
    model: Annotated[str | None, typer.Option(help="Price a model version: NAME:VERSION.")] = None,
    hardware: Annotated[str | None, typer.Option(help="Price a hardware type per hour.")] = None,
    effective_from: Annotated[
        str | None,
        typer.Option("--from", help="When the prices start (ISO 8601, future); default now."),
    ] = None,
    url: Url = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add prices, in force from now (or --from) until newer ones start. Units: per_1k_requests,
    per_1k_input_tokens, per_1k_output_tokens, per_audio_minute, per_image, per_1k_rows;
    hardware: per_hour."""
    with _client(url, token) as client:
        rows = client.set_prices(
            _parse_prices(prices),
            endpoint=endpoint,
            model=model,
            hardware=hardware,
            effective_from=effective_from,
        )
    _print(rows, as_json, _PRICE_COLUMNS)


@prices_app.command("list")
def prices_list(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's prices.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model version's.")] = None,
    hardware: Annotated[str | None, typer.Option(help="Only this hardware type's.")] = None,
    url: Url = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every price ever set, oldest first; in_force marks the ones that apply now."""
    with _client(url, token) as client:
        rows = client.list_prices(endpoint=endpoint, model=model, hardware=hardware)
    _print(rows, as_json, _PRICE_COLUMNS)


def cost(
    by: Annotated[
        str, typer.Option(help="team, project, customer, endpoint, revision or key.")
    ] = "endpoint",
    since: Annotated[str, typer.Option(help="24h, 7d, month, today or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Default: now.")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's usage.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's usage.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's usage.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this API key id's usage.")] = None,
    output: Format = "table",
    url: Url = None,
    token: Token = None,
) -> None:
    """What each team / project / customer / endpoint / revision / key spent: unit cost,
    compute cost (replica time by busy-time share) and total; idle compute on its own line."""
    if output not in ("table", "json", "csv"):
        err.print(f"[red]error[/red] --format must be table, json or csv, not {output!r}")
        raise typer.Exit(1)
    filters = {
        "team": team,
        "project": project,
        "customer": customer,
        "endpoint": endpoint,
        "key": key,
    }
    with _client(url, token) as client:
        report = client.get_costs(
            by, since, until, **{k: v for k, v in filters.items() if v is not None}
        )
    if output == "json":
        _print(report, True)
    elif output == "csv":
        out.print(_csv(report), end="", highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(_table(report))


def _lines(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report as one header and rows of text: a row per group, then idle and total."""
    names = ["endpoint", "revision"] if report["by"] == "revision" else [report["by"]]
    header = [*names, "requests", "unit_usd", "compute_usd", "total_usd"]
    rows = [
        [
            *(str(row[n]) or "(none)" for n in names),
            str(row["requests"]),
            row["unit"]["usd"],
            row["compute"]["usd"],
            row["total"]["usd"],
        ]
        for row in report["rows"]
    ]
    blank = [""] * (len(names) - 1)
    idle = report["idle"]["usd"]
    totals = report["totals"]
    rows.append(["(idle)", *blank, "0", "0.000000000", idle, idle])
    rows.append(
        [
            "(total)",
            *blank,
            str(totals["requests"]),
            totals["unit"]["usd"],
            format_usd(totals["compute"]["nanousd"] + totals["idle"]["nanousd"]),
            totals["total"]["usd"],
        ]
    )
    return header, rows


def _table(report: dict[str, Any]) -> Table:
    header, rows = _lines(report)
    table = Table(
        *header, title=f"cost by {report['by']}, {report['since']} to {report['until']} (USD)"
    )
    # Why each endpoint exists, where its intent says so (the table only: CSV keeps its columns).
    outcomes = [row.get("outcome") or "" for row in report["rows"]]
    if any(outcomes):
        table.add_column("outcome")
        rows = [[*row, outcome] for row, outcome in zip(rows, [*outcomes, "", ""], strict=True)]
    for row in rows:
        table.add_row(*row)
    return table


def _csv(report: dict[str, Any]) -> str:
    header, rows = _lines(report)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
