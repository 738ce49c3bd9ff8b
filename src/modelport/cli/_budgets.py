"""``modelport budgets set|list|delete``: daily and monthly caps in USD per key, project,
team, customer or endpoint."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelport.cli._common import AsJson, Token, Url, _client, _print
from modelport.cli._scopes import Customer, Endpoint, Key, KindFilter, Project, Team, one_scope

__all__ = ["register"]

budgets_app = typer.Typer(
    no_args_is_help=True,
    help="Spending caps per day and per month (UTC) in USD, per key, project, team, customer "
    "or endpoint: a call is refused (429) when its estimated cost does not fit.",
)

_COLUMNS = ["kind", "name", "period", "cap_usd", "spent_usd", "reserved_usd", "remaining_usd"]
_COLUMNS += ["resets_at", "source"]


def register(app: typer.Typer) -> None:
    """Add ``budgets`` to the main app."""
    app.add_typer(budgets_app, name="budgets")


def _rows(budgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per capped period."""
    rows = []
    for budget in budgets:
        for period in ("daily", "monthly"):
            line = budget.get(period)
            if line:
                rows.append({**budget, "period": period, **line})
    return rows


@budgets_app.command("set")
def budgets_set(
    key: Key = None,
    project: Project = None,
    team: Team = None,
    customer: Customer = None,
    endpoint: Endpoint = None,
    daily: Annotated[
        str | None, typer.Option("--daily", help="USD per UTC day, e.g. 20 or 0.50.")
    ] = None,
    monthly: Annotated[
        str | None, typer.Option("--monthly", help="USD per UTC calendar month, e.g. 500.")
    ] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the caps of one scope (replacing what was set on it); a period left out is not
    capped. Enforced at once, counting what the scope spent so far this day and month."""
    kind, name = one_scope(key, project, team, customer, endpoint)
    with _client(url, token) as client:
        budget = client.set_budget(kind, name, daily_usd=daily, monthly_usd=monthly)
    if as_json:
        _print(budget, True)
    else:
        _print(_rows([budget]), False, _COLUMNS)


@budgets_app.command("list")
def budgets_list(
    kind: KindFilter = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Every budget with, per capped period, what was spent, what calls in flight hold
    reserved, what remains and when it resets (UTC)."""
    with _client(url, token) as client:
        budgets = client.list_budgets(kind)
    if as_json:
        _print(budgets, True)
    else:
        _print(_rows(budgets), False, _COLUMNS)


@budgets_app.command("delete")
def budgets_delete(
    key: Key = None,
    project: Project = None,
    team: Team = None,
    customer: Customer = None,
    endpoint: Endpoint = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Remove the caps set through the API on one scope (an endpoint intent's budget stays)."""
    kind, name = one_scope(key, project, team, customer, endpoint)
    with _client(url, token) as client:
        removed = client.delete_budget(kind, name)
    _print(removed, as_json, ["kind", "name", "deleted"])
