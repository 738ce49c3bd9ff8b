"""Who calls the control plane: the actor, its roles, and the permissions a role grants.

Pure logic, shared by the control plane (which authenticates and authorizes) and anyone who
records who did what (audit, rollouts). Roles are per team; ``admin`` is the installation.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "SYSTEM",
    "USER_TOKEN_PREFIX",
    "Actor",
    "ActorKind",
    "NewUserToken",
    "Permission",
    "grants",
    "new_user_token",
]

ROLES = ("owner", "deployer", "viewer")  # per team; "admin" is installation-wide

Permission = Literal["read", "deploy", "manage", "admin"]
PERMISSIONS: tuple[Permission, ...] = ("read", "deploy", "manage", "admin")

# Each role includes the ones below it: a deployer may read, an owner may deploy.
_ROLE_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "viewer": frozenset({"read"}),
        "deployer": frozenset({"read", "deploy"}),
        "owner": frozenset({"read", "deploy", "manage"}),
    }
)

ActorKind = Literal["admin", "user", "oidc", "key", "system"]
USER_TOKEN_PREFIX = "mpu_"  # noqa: S105 - a prefix, not a secret
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a request: the bootstrap admin, a user, an OIDC subject, an API key, or the
    system itself (automatic moves). ``teams`` maps team -> role."""

    name: str
    kind: ActorKind
    teams: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # mappingproxy is unhashable
    project: str = ""  # for kind "key": the key's project (read-only usage access)
    admin: bool = False  # a user marked admin holds the installation, like the admin token

    @property
    def is_admin(self) -> bool:
        """Whether this actor holds every power (the admin token, an admin user, the system)."""
        return self.kind in ("admin", "system") or self.admin

    def role_in(self, team: str) -> str | None:
        """This actor's role on ``team``, or None without one."""
        return self.teams.get(team)

    def may(self, permission: str, team: str | None) -> bool:
        """Whether this actor holds ``permission`` on ``team`` (None: installation-wide)."""
        if self.is_admin:
            return True
        if permission == "admin" or team is None:
            return False
        return grants(self.role_in(team), permission)

    def teams_with(self, permission: str) -> frozenset[str]:
        """The teams on which this actor holds ``permission`` (every team: see ``is_admin``)."""
        return frozenset(t for t, role in self.teams.items() if grants(role, permission))


SYSTEM = Actor("system", "system")


def grants(role: str | None, permission: str) -> bool:
    """Whether ``role`` (per team) includes ``permission``."""
    return role is not None and permission in _ROLE_GRANTS.get(role, frozenset())


@dataclass(frozen=True, slots=True)
class NewUserToken:
    token: str  # shown once, never stored
    token_hash: str


def new_user_token() -> NewUserToken:
    """A fresh user token (``mpu_`` + 256 random bits) and its sha256, as for API keys."""
    token = USER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewUserToken(token=token, token_hash=hashlib.sha256(token.encode()).hexdigest())
