"""Teams, projects, users and role bindings: the services, and the in-memory book of who is
who that the guard authenticates against.

The guard runs on the event loop and must not query the database there, so user tokens (and
user names, which OpenID Connect subjects map to) are resolved from ``IdentityBook``, an
immutable snapshot swapped after every identity change, as the gateway holds keys.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.names import check_name
from modelport.governance.identity import ROLES, Actor, new_user_token
from modelport.governance.keys import hash_secret
from modelport.store import Database
from modelport.store.identity_tables import ProjectRow, RoleBindingRow, TeamRow, UserRow
from modelport.store.tables import ApiKeyRow

__all__ = [
    "DEFAULT",
    "IdentityBook",
    "MemberPublic",
    "ProjectCreate",
    "ProjectPublic",
    "RoleGrant",
    "TeamCreate",
    "TeamPublic",
    "UserCreate",
    "UserCreated",
    "UserPublic",
    "create_project",
    "create_team",
    "create_user",
    "disable_user",
    "ensure_default_project",
    "grant_role",
    "key_actor",
    "list_projects",
    "list_teams",
    "list_users",
    "load_identities",
    "project_team",
    "project_teams",
    "revoke_role",
    "rotate_token",
    "team_members",
]

log = logging.getLogger("modelport.control")

DEFAULT = "default"  # the team and project everything belongs to unless told otherwise
# OIDC subjects are often e-mail addresses or opaque ids: user names allow those characters.
_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._@+-]{0,126}[A-Za-z0-9])?$")


# -- wire models ------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamCreate(_In):
    name: str = Field(max_length=64, examples=["search"])


class ProjectCreate(_In):
    name: str = Field(max_length=64, examples=["ranking"])
    team: str = Field(max_length=64, description="The team that owns the project.")


class UserCreate(_In):
    name: str = Field(
        max_length=128,
        description="Unique; an OpenID Connect token whose user claim equals it acts as it.",
    )
    admin: bool = Field(default=False, description="Holds the whole installation.")


class RoleGrant(_In):
    user: str = Field(max_length=128)
    role: str = Field(max_length=16, description="owner | deployer | viewer")


class MemberPublic(BaseModel):
    user: str
    role: str


class TeamPublic(BaseModel):
    name: str
    created_at: datetime
    members: list[MemberPublic] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)


class ProjectPublic(BaseModel):
    name: str
    team: str
    created_at: datetime


class UserPublic(BaseModel):
    name: str
    admin: bool
    created_at: datetime
    disabled_at: datetime | None
    teams: dict[str, str] = Field(default_factory=dict)


class UserCreated(UserPublic):
    token: str = Field(description="The user's token. Shown only in this response: store it.")


# -- teams and projects -----------------------------------------------------------------------


_Named = TypeVar("_Named", TeamRow, ProjectRow, UserRow)


def _existing(session: Session, kind: str, table: type[_Named], name: str, missing: int) -> _Named:
    """The ``kind`` (team or user) called ``name``; if there is none, 404 naming ``kind``, or
    400 where ``missing`` says the caller named it in a request body."""
    row = session.scalar(select(table).where(table.name == name))
    if row is None:
        message = (
            f"{kind} '{name}' does not exist: create it with 'modelport {kind}s create {name}'"
        )
        if missing == 400:
            raise InvalidRequest(message, field=kind, param=kind)
        raise NotFound(message, field=kind)
    return row


def _team(session: Session, name: str, *, missing: int = 404) -> TeamRow:
    return _existing(session, "team", TeamRow, name, missing)


def _add_new(session: Session, kind: str, row: _Named) -> _Named:
    """Store ``row``, a new team, project or user; 409 naming ``name`` if ``kind`` has one by
    that name already."""
    table = type(row)
    if session.scalar(select(table).where(table.name == row.name)) is not None:
        raise Conflict(f"{kind} '{row.name}' already exists", field="name")
    session.add(row)
    session.flush()
    return row


def create_team(session: Session, *, name: str) -> TeamRow:
    """A new team; 409 if the name is taken."""
    _checked("team", name)
    return _add_new(session, "team", TeamRow(name=name))


def list_teams(session: Session) -> list[TeamRow]:
    return list(session.scalars(select(TeamRow).order_by(TeamRow.name)))


def team_public(session: Session, row: TeamRow) -> TeamPublic:
    projects = session.scalars(
        select(ProjectRow.name).where(ProjectRow.team == row.name).order_by(ProjectRow.name)
    )
    return TeamPublic(
        name=row.name,
        created_at=row.created_at,
        members=[MemberPublic(user=u, role=r) for u, r in team_members(session, row.name)],
        projects=list(projects),
    )


def get_team(session: Session, name: str) -> TeamRow:
    return _team(session, name)


def team_members(session: Session, team: str) -> list[tuple[str, str]]:
    """(user, role) of everyone bound to ``team``, by user name."""
    rows = session.execute(
        select(UserRow.name, RoleBindingRow.role)
        .join(RoleBindingRow, RoleBindingRow.user_id == UserRow.id)
        .where(RoleBindingRow.team == team)
        .order_by(UserRow.name)
    )
    return [(name, role) for name, role in rows]


def create_project(session: Session, *, name: str, team: str) -> ProjectRow:
    """A new project owned by ``team`` (which must exist: 400 naming ``team``)."""
    _checked("project", name)
    _team(session, team, missing=400)
    return _add_new(session, "project", ProjectRow(name=name, team=team))


def list_projects(session: Session) -> list[ProjectRow]:
    return list(session.scalars(select(ProjectRow).order_by(ProjectRow.name)))


def project_team(session: Session, project: str) -> str:
    """The team that owns ``project``; ``NotFound`` naming ``project`` if there is none."""
    team = session.scalar(select(ProjectRow.team).where(ProjectRow.name == project))
    if team is None:
        raise NotFound(
            f"project '{project}' does not exist: an admin creates it with "
            f"'modelport projects create {project} --team TEAM'",
            field="project",
        )
    return team


def project_teams(session: Session) -> dict[str, str]:
    """project -> team, for every project (to filter lists by the caller's teams)."""
    return {name: team for name, team in session.execute(select(ProjectRow.name, ProjectRow.team))}


def ensure_default_project(session: Session) -> None:
    """Team ``default`` and project ``default`` exist (the migration makes them; a database
    whose rows were removed by hand gets them back)."""
    if session.scalar(select(TeamRow).where(TeamRow.name == DEFAULT)) is None:
        session.add(TeamRow(name=DEFAULT))
        session.flush()
    if session.scalar(select(ProjectRow).where(ProjectRow.name == DEFAULT)) is None:
        session.add(ProjectRow(name=DEFAULT, team=DEFAULT))
        session.flush()


# -- users and roles --------------------------------------------------------------------------


def _user(session: Session, name: str, *, missing: int = 404) -> UserRow:
    return _existing(session, "user", UserRow, name, missing)


def create_user(session: Session, *, name: str, admin: bool = False) -> tuple[UserRow, str]:
    """A new user and its token, which is shown once and stored only as its sha256."""
    if not _USER.match(name):
        raise InvalidRequest(
            f"invalid user name {name!r}: use 1-128 letters, digits, '.', '_', '@', '+' or '-', "
            "starting and ending with a letter or digit",
            field="name",
            param="name",
        )
    new = new_user_token()
    row = UserRow(name=name, token_hash=new.token_hash, admin=admin)
    return _add_new(session, "user", row), new.token


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.name)))


def user_public(session: Session, row: UserRow) -> UserPublic:
    return UserPublic(
        name=row.name,
        admin=row.admin,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        teams=_bindings(session, row.id),
    )


def rotate_token(session: Session, name: str) -> tuple[UserRow, str]:
    """A new token for ``name``; the old one stops working at once."""
    row = _user(session, name)
    new = new_user_token()
    row.token_hash = new.token_hash
    session.flush()
    return row, new.token


def disable_user(session: Session, name: str) -> UserRow:
    """Stop ``name``'s token and OIDC logins; its bindings stay, for the record."""
    row = _user(session, name)
    if row.disabled_at is None:
        row.disabled_at = datetime.now(UTC)
    return row


def grant_role(session: Session, *, team: str, user: str, role: str) -> RoleBindingRow:
    """Give ``user`` ``role`` on ``team``, replacing the role it had there."""
    if role not in ROLES:
        raise InvalidRequest(
            f"unknown role {role!r}: use one of {', '.join(ROLES)}", field="role", param="role"
        )
    _team(session, team)
    user_row = _user(session, user, missing=400)
    binding = session.scalar(
        select(RoleBindingRow).where(
            RoleBindingRow.user_id == user_row.id, RoleBindingRow.team == team
        )
    )
    if binding is None:
        binding = RoleBindingRow(user_id=user_row.id, team=team, role=role)
        session.add(binding)
    else:
        binding.role = role
    session.flush()
    return binding


def revoke_role(session: Session, *, team: str, user: str) -> None:
    """Remove ``user``'s role on ``team`` (404 if it had none)."""
    _team(session, team)
    user_row = _user(session, user)
    binding = session.scalar(
        select(RoleBindingRow).where(
            RoleBindingRow.user_id == user_row.id, RoleBindingRow.team == team
        )
    )
    if binding is None:
        raise NotFound(f"user '{user}' has no role on team '{team}'", field="user")
    session.delete(binding)
    session.flush()


def _bindings(session: Session, user_id: int) -> dict[str, str]:
    rows = session.execute(
        select(RoleBindingRow.team, RoleBindingRow.role).where(RoleBindingRow.user_id == user_id)
    )
    return {team: role for team, role in rows}


def _checked(kind: str, name: str) -> None:
    try:
        check_name(kind, name)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, field="name", param="name") from None


# -- the in-memory book the guard reads --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identities:
    """Who is who, as of the last refresh. ``by_hash``: sha256 of a user token -> actor;
    ``by_name``: user name -> actor (OIDC). Disabled users are in neither."""

    by_hash: Mapping[str, Actor] = field(default_factory=dict)
    by_name: Mapping[str, Actor] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()


def load_identities(session: Session) -> Identities:
    """Every enabled user as an actor with its role bindings. Blocking: call it in a thread."""
    bindings: dict[int, dict[str, str]] = {}
    for user_id, team, role in session.execute(
        select(RoleBindingRow.user_id, RoleBindingRow.team, RoleBindingRow.role)
    ):
        bindings.setdefault(user_id, {})[team] = role
    by_hash: dict[str, Actor] = {}
    by_name: dict[str, Actor] = {}
    disabled: set[str] = set()
    for row in session.scalars(select(UserRow)):
        if row.disabled_at is not None:
            disabled.add(row.name)
            continue
        actor = Actor(row.name, "user", MappingProxyType(bindings.get(row.id, {})), admin=row.admin)
        by_hash[row.token_hash] = actor
        by_name[row.name] = actor
    return Identities(MappingProxyType(by_hash), MappingProxyType(by_name), frozenset(disabled))


class IdentityBook:
    """The identities snapshot, swapped whole by ``refresh``: after every identity change made
    here, and in the background when older than ``max_age_s`` (servers sharing a database
    see each other's changes that late at most)."""

    def __init__(self, db: Database, *, max_age_s: float = 30.0) -> None:
        self._db = db
        self._current = Identities()
        self._loaded_at = time.monotonic()
        self.max_age_s = max_age_s
        self._refreshing: asyncio.Task[None] | None = None

    def _load(self) -> Identities:
        with self._db.session() as session:
            return load_identities(session)

    async def refresh(self) -> None:
        """Reload from the database in a thread, then swap the snapshot atomically."""
        loaded_at = time.monotonic()
        self._current = await asyncio.to_thread(self._load)
        self._loaded_at = loaded_at

    def refresh_if_old(self) -> None:
        """Start a background refresh when the snapshot is older than ``max_age_s``; never
        waits for it (call on the event loop)."""
        if self._refreshing is not None or time.monotonic() - self._loaded_at < self.max_age_s:
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the old snapshot keeps serving; the next request tries again
            log.exception("identities could not be reloaded")
            self._loaded_at = time.monotonic()
        finally:
            self._refreshing = None

    def by_token(self, token: str) -> Actor | None:
        """The enabled user whose token this is."""
        return self._current.by_hash.get(hash_secret(token))

    def by_name(self, name: str) -> Actor | None:
        """The enabled user called ``name`` (what an OIDC subject maps to)."""
        return self._current.by_name.get(name)

    def is_disabled(self, name: str) -> bool:
        """Whether ``name`` is a user an admin disabled (its OIDC logins are refused)."""
        return name in self._current.disabled


def key_actor(session: Session, key_hash: str) -> Actor | None:
    """The API key with this hash as an actor (read-only usage of its project), if it still
    works. Blocking: call it in a thread."""
    row = session.scalar(
        select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
    )
    if row is None:
        return None
    expires_at = getattr(row, "expires_at", None)  # keys may expire (scoped keys)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return None
    return Actor(f"key:{row.id}", "key", project=row.project)
