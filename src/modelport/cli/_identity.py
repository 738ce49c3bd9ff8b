"""``modelport teams|projects|users`` and ``modelport whoami``: who may do what.

Every command acts with ``--token`` / ``MODELPORT_TOKEN`` (a user token) when given, else with
the admin token of ``$MODELPORT_HOME``: people use their own token, so that what they do is
checked against their roles and recorded under their name.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelport.cli._common import AsJson, Token, Url, _client, _print, _print_rows, out

__all__ = ["register"]

teams_app = typer.Typer(no_args_is_help=True, help="Teams and the roles people hold on them.")
projects_app = typer.Typer(no_args_is_help=True, help="Projects, each owned by a team.")
users_app = typer.Typer(no_args_is_help=True, help="People who use the control plane (admins).")

_TEAM_COLUMNS = ["name", "members", "projects", "created_at"]
_USER_COLUMNS = ["name", "admin", "teams", "created_at", "disabled_at"]


def register(app: typer.Typer) -> None:
    """Add ``teams``, ``projects``, ``users`` and ``whoami`` to the main app."""
    app.add_typer(teams_app, name="teams")
    app.add_typer(projects_app, name="projects")
    app.add_typer(users_app, name="users")
    app.command("whoami")(whoami)


def whoami(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Who your token is, and your role on each team."""
    with _client(url, token) as client:
        _print(client.whoami(), as_json, ["name", "kind", "admin", "teams"])


# -- teams -------------------------------------------------------------------------------------


def _team_row(team: dict[str, Any]) -> dict[str, Any]:
    return {
        **team,
        "members": ", ".join(f"{m['user']} ({m['role']})" for m in team.get("members") or []),
        "projects": ", ".join(team.get("projects") or []),
    }


@teams_app.command("create")
def teams_create(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '.', '_', '-'.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a team (admins)."""
    with _client(url, token) as client:
        _print(_team_row(client.create_team(name)), as_json, _TEAM_COLUMNS)


@teams_app.command("list")
def teams_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """The teams you hold a role on (every team for an admin), with members and projects."""
    with _client(url, token) as client:
        _print_rows(client.list_teams(), as_json, _TEAM_COLUMNS, _team_row)


@teams_app.command("grant")
def teams_grant(
    team: Annotated[str, typer.Argument(help="The team.")],
    user: Annotated[str, typer.Argument(help="The user (see 'modelport users list').")],
    role: Annotated[str, typer.Argument(help="owner, deployer or viewer.")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Give USER ROLE on TEAM, replacing the role it had there (admins and the team's owners).
    viewer reads; deployer also deploys and rolls out; owner also manages keys and roles."""
    with _client(url, token) as client:
        client.grant_role(team, user, role)
    out.print(f"{user} is now {role} of team {team}")


@teams_app.command("revoke")
def teams_revoke(
    team: Annotated[str, typer.Argument(help="The team.")],
    user: Annotated[str, typer.Argument(help="The user.")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Remove USER's role on TEAM (admins and the team's owners)."""
    with _client(url, token) as client:
        client.revoke_role(team, user)
    out.print(f"{user} no longer holds a role on team {team}")


# -- projects ----------------------------------------------------------------------------------


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="The project, as intents and keys name it.")],
    team: Annotated[str, typer.Option("--team", help="The team that owns it.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a project owned by a team (admins)."""
    with _client(url, token) as client:
        _print(client.create_project(name, team), as_json, ["name", "team", "created_at"])


@projects_app.command("list")
def projects_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """The projects of your teams (every project for an admin)."""
    with _client(url, token) as client:
        _print(client.list_projects(), as_json, ["name", "team", "created_at"])


# -- users -------------------------------------------------------------------------------------


def _user_row(user: dict[str, Any]) -> dict[str, Any]:
    teams = user.get("teams") or {}
    return {**user, "teams": ", ".join(f"{t} ({r})" for t, r in sorted(teams.items()))}


def _show_token(user: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print(user, True)
        return
    out.print(f"user {user['name']}: token (shown only now, store it):")
    out.print(str(user["token"]), soft_wrap=True, highlight=False)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Unique; OIDC logins whose user claim equals it.")],
    admin: Annotated[bool, typer.Option("--admin", help="Holds the whole installation.")] = False,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a user and print its token, once (admins)."""
    with _client(url, token) as client:
        _show_token(client.create_user(name, admin=admin), as_json)


@users_app.command("list")
def users_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Every user, with its roles (admins)."""
    with _client(url, token) as client:
        _print_rows(client.list_users(), as_json, _USER_COLUMNS, _user_row)


@users_app.command("rotate-token")
def users_rotate_token(
    name: Annotated[str, typer.Argument(help="The user.")],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Give a user a new token, printed once; the old one stops working at once (admins)."""
    with _client(url, token) as client:
        _show_token(client.rotate_user_token(name), as_json)


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="The user.")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Stop a user's token and OIDC logins at once; its roles are kept for the record."""
    with _client(url, token) as client:
        client.disable_user(name)
    out.print(f"user {name} is disabled")
