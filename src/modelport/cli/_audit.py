"""``modelport audit list|export|verify``: read the audit log and check its hash chain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from modelport.cli._common import AsJson, Token, Url, _client, _print, err, out

__all__ = ["register"]

audit_app = typer.Typer(
    no_args_is_help=True,
    help="Who changed what, and when: list, export and verify the audit log (admins).",
)

Actor = Annotated[
    str | None, typer.Option(help="Only this actor: admin, a user, key:<id>, system.")
]
Action = Annotated[
    str | None,
    typer.Option(help="Only this action (endpoints.apply), or a prefix ending in '.' (keys.)."),
]
Target = Annotated[
    str | None, typer.Option(help="Only this target: endpoint:NAME, model:NAME, key:ID, ...")
]
Since = Annotated[str | None, typer.Option(help="90m, 24h, 7d, today, month or ISO 8601.")]

_COLUMNS = ["seq", "at", "actor", "action", "target", "outcome", "source", "request_id"]


def register(app: typer.Typer) -> None:
    """Add ``audit`` to the main app."""
    app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    actor: Actor = None,
    action: Action = None,
    target: Target = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest), 1-1000.")] = 100,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The newest matching entries, oldest first."""
    with _client(url, token) as client:
        entries = client.list_audit(
            actor=actor, action=action, target=target, since=since, limit=limit
        )
    if as_json:
        _print(entries, True)
        return
    table = Table()
    for column in _COLUMNS:
        table.add_column(column, overflow="fold")  # a target cut short would mislead
    for entry in entries:
        row = {**entry, "at": entry["at"][:19].replace("T", " ")}
        table.add_row(*(str(row.get(column, "")) for column in _COLUMNS))
    out.print(table)


@audit_app.command("export")
def audit_export(
    actor: Actor = None,
    action: Action = None,
    target: Target = None,
    since: Since = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Every matching entry as JSON lines on stdout (redirect it to a file), hashes included,
    streamed as the server reads it."""
    with _client(url, token) as client:
        for line in client.export_audit(actor=actor, action=action, target=target, since=since):
            sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


@audit_app.command("verify")
def audit_verify(
    anchors: Annotated[
        Path | None,
        typer.Option(
            help="Anchors kept elsewhere (JSON lines of {seq, hash}, e.g. what the anchor "
            "webhook received), checked besides the server's anchor file.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Recompute the hash chain and check it against the anchors; exit 1 naming the first
    entry altered, inserted or removed (or a truncated tail) if it does not hold."""
    given: list[dict[str, Any]] = []
    if anchors is not None:
        given = _read_anchors(anchors)
    with _client(url, token) as client:
        result = client.verify_audit(given)
    if as_json:
        _print(result, True)
    elif result["ok"]:
        out.print(
            f"[green]ok[/green] {result['checked']} entries, chain head {result['head']['seq']}, "
            f"checked against {result['anchors']} anchors"
        )
    if not result["ok"]:
        problem = result["first_problem"]
        err.print(
            f"[red]audit chain broken[/red] at entry {problem['seq']} ({problem['kind']}): "
            f"{problem['message']}; {result['checked']} entries before it are sound"
        )
        raise typer.Exit(1)


def _read_anchors(path: Path) -> list[dict[str, Any]]:
    anchors = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            anchors.append({"seq": int(data["seq"]), "hash": str(data["hash"])})
        except (ValueError, KeyError, TypeError):
            err.print(f"[red]error[/red] {path} line {number} is not an anchor {{seq, hash}}")
            raise typer.Exit(1) from None
    return anchors
