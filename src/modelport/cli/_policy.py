"""``modelport policy put|list|show|delete|test``: policies as code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelport.cli._common import AsJson, Token, Url, _client, _print, _print_rows, out

__all__ = ["register"]

policy_app = typer.Typer(
    no_args_is_help=True,
    help="Policies as code: rules checked when intents are planned or applied, rollouts "
    "promoted and keys created.",
)

_COLUMNS = ["name", "version", "mode", "enabled", "stages", "rules", "updated_by"]
File = Annotated[
    Path,
    typer.Option("-f", "--file", exists=True, dir_okay=False, readable=True, show_default=False),
]
# What each verdict looks like in the dry run's listing.
_MARKS = {
    "pass": "[green]pass[/green]",
    "skip": "[dim]skip[/dim]",
    "deny": "[red]DENY[/red]",
    "approval": "[yellow]needs approval[/yellow]",
}


def register(app: typer.Typer) -> None:
    """Add ``policy`` to the main app."""
    app.add_typer(policy_app, name="policy")


def _row(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        **policy,
        "stages": ",".join(policy["stages"]),
        "rules": ",".join(policy["rules"]),
    }


@policy_app.command("put")
def put(
    name: Annotated[str, typer.Argument(help="The policy's name.")],
    file: File,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Store a new version of a policy from its YAML file and put it in force."""
    with _client(url, token) as client:
        policy = client.put_policy(name, file)
    _print_rows(policy, as_json, _COLUMNS, _row)


@policy_app.command("list")
def list_(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Every policy, enabled or not, with its newest version."""
    with _client(url, token) as client:
        policies = client.list_policies()
    _print_rows(policies, as_json, _COLUMNS, _row)


@policy_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The policy's name.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """One policy: its text in force and every version (who wrote it, when)."""
    with _client(url, token) as client:
        policy = client.policy(name)
    if as_json:
        _print(policy, True)
        return
    state = "enabled" if policy["enabled"] else "disabled"
    out.print(f"[bold]{policy['name']}[/bold] v{policy['version']} ({policy['mode']}, {state})")
    for version in policy["versions"]:
        enabled = "" if version["enabled"] else " disabled"
        out.print(
            f"  v{version['version']} {version['mode']}{enabled} by {version['created_by']} "
            f"at {version['created_at']}",
            highlight=False,
        )
    out.print(escape(policy["versions"][-1]["text"]), highlight=False)


@policy_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The policy's name.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Disable a policy; its history stays, and 'modelport policy put' enables it again."""
    with _client(url, token) as client:
        policy = client.delete_policy(name)
    _print_rows(policy, as_json, _COLUMNS, _row)


@policy_app.command("test")
def test(
    file: File,
    stage: Annotated[str, typer.Option(help="plan or apply.")] = "apply",
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Dry run: every rule's verdict on a modelport.yaml; exit 1 if an enforced rule denies."""
    with _client(url, token) as client:
        verdict = client.test_policies(file, stage=stage)
    if as_json:
        _print(verdict, True)
    else:
        for rule in verdict["rules"]:
            audit = " (audit)" if rule["mode"] == "audit" else ""
            out.print(
                f"{_MARKS.get(rule['outcome'], rule['outcome'])} {rule['policy']}/{rule['rule']}"
                f"{audit}",
                highlight=False,
            )
            if rule["outcome"] in ("deny", "approval"):
                for reason in rule["reasons"]:
                    out.print(f"    {escape(reason)}", highlight=False)
                out.print(f"    how to comply: {escape(rule['message'])}", highlight=False)
        allowed = "allowed" if verdict["allowed"] else "[red]denied[/red]"
        out.print(f"{verdict['stage']}: {allowed}")
    if not verdict["allowed"]:
        raise typer.Exit(1)
