"""``modelport slo ENDPOINT`` and ``modelport alerts``: error budgets, webhooks, episodes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelport.cli._common import AsJson, Token, Url, _client, _print, out

__all__ = ["register"]

alerts_app = typer.Typer(no_args_is_help=True, help="Alert episodes and the webhooks they go to.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Where alert notices are POSTed.")
alerts_app.add_typer(webhooks_app, name="webhooks")

_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def register(app: typer.Typer) -> None:
    """Add ``slo`` and ``alerts`` to the CLI."""
    app.command()(slo)
    app.add_typer(alerts_app, name="alerts")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _budget(value: float | None) -> str:
    if value is None:
        return "-"
    style = "green" if value > 0.5 else "yellow" if value > 0 else "red"
    return f"[{style}]{value:.1%}[/{style}]"


def slo(endpoint: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Show the endpoint's error budget left and burn rates, per objective."""
    with _client(url, token) as client:
        report: dict[str, Any] = client.get_slo(endpoint)
    if as_json:
        _print(report, True)
        return
    if not report["objectives"]:
        out.print(report["message"], highlight=False)
        return
    out.print(
        f"endpoint {endpoint}: error budget left {_budget(report['budget_remaining'])} of "
        f"{report['window']}",
        highlight=False,
    )
    table = Table("objective", "events", "bad", "sli", "budget left", *_WINDOWS, "alerts")
    for objective in report["objectives"]:
        rates = objective["burn_rates"]
        firing = [a["windows"] for a in objective["alerts"] if a["firing"]]
        table.add_row(
            objective["description"],
            str(objective["valid_events"]),
            str(objective["bad_events"]),
            _percent(objective["sli"]),
            _budget(objective["budget_remaining"]),
            *(f"{rates[w]:.2f}" for w in _WINDOWS),
            "[red]" + ", ".join(firing) + "[/red]" if firing else "none",
        )
    out.print(table)
    for alert in report["alerts"]:
        out.print(f"[red]open[/red] {alert['summary']}", highlight=False)


@alerts_app.command("list")
def alerts_list(
    state: Annotated[str, typer.Option(help="open, closed or all.")] = "all",
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Alert episodes: open ones first, then the most recent closed ones."""
    with _client(url, token) as client:
        episodes = client.list_alerts(state=state, endpoint=endpoint, limit=limit)
    _print(episodes, as_json, ["id", "state", "kind", "endpoint", "summary", "opened_at"])


@webhooks_app.command("add")
def webhooks_add(
    webhook_url: Annotated[str, typer.Argument(metavar="URL", help="http:// or https://")],
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="MODELPORT_WEBHOOK_SECRET",
            help="Signs each notice (16+ characters); generated and shown once if omitted.",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What the webhook is for.")] = "",
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Send every alert notice to URL, signed with the webhook's secret."""
    with _client(url, token) as client:
        created = client.create_webhook(webhook_url, secret=secret, description=description)
    if as_json:
        _print(created, True)
        return
    out.print(f"webhook {created['id']} -> {created['url']}", highlight=False)
    if secret is None:
        out.print(f"secret (shown only now): {created['secret']}", highlight=False)


@webhooks_app.command("list")
def webhooks_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """List webhooks (their secrets are never shown)."""
    with _client(url, token) as client:
        _print(client.list_webhooks(), as_json, ["id", "url", "description", "created_at"])


@webhooks_app.command("delete")
def webhooks_delete(webhook_id: str, url: Url = None, token: Token = None) -> None:
    """Stop sending notices to a webhook."""
    with _client(url, token) as client:
        client.delete_webhook(webhook_id)
    out.print(f"deleted webhook {webhook_id}", highlight=False)
