"""``modelport environments create|list|show|delete``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelport.cli._common import AsJson, Token, Url, _client, _print_rows

__all__ = ["register"]

environments_app = typer.Typer(
    no_args_is_help=True,
    help="Where endpoints run: shared, dedicated or isolated (memory and CPU limits, no "
    "outbound network), the hardware each offers and the data sensitivities it accepts.",
)

_COLUMNS = ["name", "kind", "hardware", "sensitivities", "limits", "endpoints"]


def register(app: typer.Typer) -> None:
    """Add ``environments`` to the main app."""
    app.add_typer(environments_app, name="environments")


def _row(item: dict[str, Any]) -> dict[str, Any]:
    limits = [
        f"{item[field]}{unit}"
        for field, unit in (("memory_mb", " MB"), ("cpus", " CPUs"))
        if item.get(field) is not None
    ]
    if item.get("kind") == "isolated":
        limits.append("no network")
    return {
        **item,
        "hardware": ", ".join(item.get("hardware", [])),
        "sensitivities": ", ".join(item.get("sensitivities", [])),
        "limits": ", ".join(limits),
        "endpoints": ", ".join(item.get("endpoints", [])),
    }


def _names(values: str | None) -> list[str] | None:
    return [v.strip() for v in values.split(",")] if values is not None else None


@environments_app.command("create")
def environments_create(
    name: Annotated[str, typer.Argument(help="The environment's name.")],
    kind: Annotated[str, typer.Option("--kind", help="shared, dedicated or isolated.")],
    hardware: Annotated[
        str | None, typer.Option("--hardware", help="Hardware types offered, comma-separated.")
    ] = None,
    sensitivities: Annotated[
        str | None,
        typer.Option(
            "--sensitivities",
            help="Data sensitivities accepted, comma-separated (public, internal, "
            "confidential, restricted); default: public,internal for shared, all for others.",
        ),
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", min=1, help="Isolated: memory per replica.")
    ] = None,
    cpus: Annotated[
        int | None, typer.Option("--cpus", min=1, help="Isolated: CPUs per replica.")
    ] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create an environment (admin)."""
    with _client(url, token) as client:
        created = client.create_environment(
            name,
            kind,
            hardware=_names(hardware),
            sensitivities=_names(sensitivities),
            memory_mb=memory_mb,
            cpus=cpus,
        )
    _print_rows(created, as_json, _COLUMNS, _row)


@environments_app.command("list")
def environments_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Every environment, with the endpoints running in each."""
    with _client(url, token) as client:
        found = client.list_environments()
    _print_rows(found, as_json, _COLUMNS, _row)


@environments_app.command("show")
def environments_show(
    name: Annotated[str, typer.Argument(help="The environment's name.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """One environment, with the endpoints running in it."""
    with _client(url, token) as client:
        found = client.get_environment(name)
    _print_rows(found, as_json, _COLUMNS, _row)


@environments_app.command("delete")
def environments_delete(
    name: Annotated[str, typer.Argument(help="The environment's name.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Delete an environment no endpoint uses (admin)."""
    with _client(url, token) as client:
        removed = client.delete_environment(name)
    _print_rows(removed, as_json, _COLUMNS, _row)
