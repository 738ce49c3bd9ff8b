"""The scope options that ``limits`` and ``budgets`` share: a command names exactly one of
``--key``, ``--project``, ``--team``, ``--customer`` or ``--endpoint``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelport.cli._common import err

__all__ = ["Customer", "Endpoint", "Key", "KindFilter", "Project", "Team", "one_scope"]

Key = Annotated[str | None, typer.Option("--key", help="An API key's id (key_...).")]
Project = Annotated[str | None, typer.Option("--project", help="A project.")]
Team = Annotated[str | None, typer.Option("--team", help="A team.")]
Customer = Annotated[
    str | None, typer.Option("--customer", help="A customer (X-Modelport-Customer / user).")
]
Endpoint = Annotated[str | None, typer.Option("--endpoint", help="An endpoint.")]
KindFilter = Annotated[
    str | None,
    typer.Option("--kind", help="Only this kind: key, project, team, customer or endpoint."),
]


def one_scope(
    key: str | None,
    project: str | None,
    team: str | None,
    customer: str | None,
    endpoint: str | None,
) -> tuple[str, str]:
    """``(kind, name)`` of the one scope given; exit 2 naming the options if not exactly one."""
    given = [
        (kind, name)
        for kind, name in (
            ("key", key),
            ("project", project),
            ("team", team),
            ("customer", customer),
            ("endpoint", endpoint),
        )
        if name is not None
    ]
    if len(given) != 1:
        err.print(
            "[red]error[/red] name exactly one scope: --key, --project, --team, --customer "
            "or --endpoint"
        )
        raise typer.Exit(2)
    return given[0]
