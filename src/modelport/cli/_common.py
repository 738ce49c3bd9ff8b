"""What every command shares: the server options, the client, and printing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from modelport.client import Client, ModelportClientError

__all__ = ["AsJson", "Token", "Url", "err", "out"]

out = Console()
err = Console(stderr=True)

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="MODELPORT_URL", help="Server URL.", show_default=False),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELPORT_TOKEN",
        help="Your user token (default: the admin token in $MODELPORT_HOME/admin-token).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def _client(url: str | None, token: str | None) -> Iterator[Client]:
    client = Client(url, token)
    try:
        yield client
    except ModelportClientError as exc:
        err.print(f"[red]error {exc.status}[/red] {exc.message}")
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        err.print(f"[red]cannot reach Modelport at {client.url}[/red] ({exc}): is it running?")
        raise typer.Exit(2) from None
    finally:
        client.close()


def _print(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json or columns is None:
        out.print_json(json.dumps(data, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    out.print(table)


def _print_rows(
    data: Any,
    as_json: bool,
    columns: list[str],
    row: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Print one item or a list of them: as JSON just as the server sent it, or as a table
    with ``row`` shaping each item for its columns (joining lists into text, say)."""
    if as_json:
        _print(data, True)
    elif isinstance(data, list):
        _print([row(item) for item in data], False, columns)
    else:
        _print(row(data), False, columns)
