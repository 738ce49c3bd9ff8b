"""``modelport limits set|list|delete``: requests, tokens per minute and concurrency per
key, project, team, customer or endpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from modelport.cli._common import AsJson, Token, Url, _client, _print
from modelport.cli._scopes import Customer, Endpoint, Key, KindFilter, Project, Team, one_scope

__all__ = ["register"]

limits_app = typer.Typer(
    no_args_is_help=True,
    help="Rate limits (requests and tokens per minute, concurrent requests) per key, "
    "project, team, customer or endpoint; the tightest that applies to a call wins.",
)

_COLUMNS = ["kind", "name", "rpm", "tpm", "concurrency", "source", "updated_by"]


def register(app: typer.Typer) -> None:
    """Add ``limits`` to the main app."""
    app.add_typer(limits_app, name="limits")


@limits_app.command("set")
def limits_set(
    key: Key = None,
    project: Project = None,
    team: Team = None,
    customer: Customer = None,
    endpoint: Endpoint = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", min=1, help="Tokens (input + output) per minute.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Requests at a time.")
    ] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the limits of one scope (replacing what was set on it through the API); a kind
    left out is unlimited."""
    kind, name = one_scope(key, project, team, customer, endpoint)
    with _client(url, token) as client:
        limit = client.set_limit(kind, name, rpm=rpm, tpm=tpm, concurrency=concurrency)
    _print(limit, as_json, _COLUMNS)


@limits_app.command("list")
def limits_list(
    kind: KindFilter = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Every limit, set through the API (source api) or by an endpoint's intent (intent)."""
    with _client(url, token) as client:
        limits = client.list_limits(kind)
    _print(limits, as_json, _COLUMNS)


@limits_app.command("delete")
def limits_delete(
    key: Key = None,
    project: Project = None,
    team: Team = None,
    customer: Customer = None,
    endpoint: Endpoint = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Remove the limits set through the API on one scope (an endpoint intent's stay)."""
    kind, name = one_scope(key, project, team, customer, endpoint)
    with _client(url, token) as client:
        removed = client.delete_limit(kind, name)
    _print(removed, as_json, _COLUMNS)
