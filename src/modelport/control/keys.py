"""API key service: create (shown once), list, revoke, rotate; what the gateway holds.

A key belongs to a project (which must exist) and so to the project's team. What it may do on
the data plane is explicit: the endpoints it is scoped to, when it expires, and its
privileges (``pin`` a revision, ``route_by_header``, ``any_customer`` or a list of customers
it may name). Every check of the input happens before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.identity import project_team
from modelport.control.schemas import KeyCreate, KeyPublic
from modelport.core.errors import Conflict, InvalidRequest, NotFound
from modelport.core.names import check_name
from modelport.core.routing import KeyPrincipal
from modelport.governance import new_api_key
from modelport.governance.identity import Actor
from modelport.store.tables import ApiKeyRow

__all__ = [
    "PERMISSIONS",
    "active_keys",
    "create_key",
    "key_public",
    "key_teams",
    "list_keys",
    "revoke_key",
    "rotate_key",
]

# Data-plane privileges a key may hold; none by default.
PERMISSIONS = ("pin", "route_by_header", "any_customer")
_MAX_CUSTOMER = 128  # the gateway keeps at most this much of a customer id


def key_public(row: ApiKeyRow) -> KeyPublic:
    """The key as the API shows it: never its secret or hash."""
    return KeyPublic(
        id=row.id,
        prefix=row.prefix,
        project=row.project,
        name=row.name,
        team=row.team,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        scopes=list(row.scopes or ()),
        permissions=list(row.permissions or ()),
        customers=list(row.customers or ()),
        rotated_from=row.rotated_from,
        replaced_by=row.replaced_by,
        created_by=row.created_by,
    )


def _checked(session: Session, body: KeyCreate) -> tuple[str, datetime | None]:
    """The key's team and expiry, once every field is valid; raises a 4xx naming the field."""
    try:
        check_name("project", body.project)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, field="project", param="project") from None
    team = project_team(session, body.project)  # NotFound naming "project"
    if body.team and body.team != team:
        raise InvalidRequest(
            f"team '{body.team}' is not project '{body.project}''s team ('{team}'): a key's "
            "team is its project's; omit 'team'",
            field="team",
            param="team",
        )
    for scope in body.scopes:
        try:
            check_name("endpoint", scope)
        except InvalidRequest as exc:
            raise InvalidRequest(f"scopes: {exc.message}", field="scopes", param="scopes") from None
    unknown = sorted(set(body.permissions) - set(PERMISSIONS))
    if unknown:
        raise InvalidRequest(
            f"unknown permission(s) {', '.join(map(repr, unknown))}: use {', '.join(PERMISSIONS)}",
            field="permissions",
            param="permissions",
        )
    for customer in body.customers:
        if not customer or len(customer) > _MAX_CUSTOMER or not customer.isprintable():
            raise InvalidRequest(
                f"customers: {customer!r} is not a customer id (1-{_MAX_CUSTOMER} printable "
                "characters)",
                field="customers",
                param="customers",
            )
        if customer == "*":
            raise InvalidRequest(
                "customers: '*' is not a customer; give the key the 'any_customer' permission",
                field="customers",
                param="customers",
            )
    expires = body.expires_at
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)  # a time without a zone is UTC
        if expires <= datetime.now(UTC):
            raise InvalidRequest(
                f"expires_at {expires.isoformat()} is in the past: give a future time",
                field="expires_at",
                param="expires_at",
            )
    return team, expires


def create_key(session: Session, body: KeyCreate, *, created_by: str = "") -> tuple[ApiKeyRow, str]:
    """A new key row and the plaintext key, which is never stored."""
    team, expires = _checked(session, body)
    new = new_api_key()
    row = ApiKeyRow(
        id=new.id,
        prefix=new.prefix,
        key_hash=new.key_hash,
        project=body.project,
        name=body.name,
        team=team,
        expires_at=expires,
        scopes=sorted(set(body.scopes)),
        permissions=sorted(set(body.permissions)),
        customers=sorted(set(body.customers)),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, new.key


def list_keys(
    session: Session, *, project: str | None = None, actor: Actor | None = None
) -> list[ApiKeyRow]:
    """Keys, oldest first; only ``project``'s if given, only those of teams ``actor`` may read
    unless it is an admin."""
    query = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
    if project:
        query = query.where(ApiKeyRow.project == project)
    if actor is not None and not actor.is_admin:
        query = query.where(ApiKeyRow.team.in_(sorted(actor.teams_with("read"))))
    return list(session.scalars(query))


def get_key(session: Session, key_id: str) -> ApiKeyRow:
    """The key ``key_id``; NotFound naming it."""
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"API key '{key_id}' does not exist", field="key")
    return row


def revoke_key(session: Session, key_id: str) -> ApiKeyRow:
    """Revoke ``key_id`` now (again: no change)."""
    row = get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row


def rotate_key(
    session: Session, key_id: str, *, grace_s: int, created_by: str = ""
) -> tuple[ApiKeyRow, ApiKeyRow, str]:
    """Replace ``key_id`` with a new key of the same settings; the old one keeps working for
    ``grace_s`` seconds. Returns (old row, new row, the new plaintext key).

    A key with an expiry hands the same lifetime, counted from now, to its successor: rotating
    is how a key is renewed."""
    old = get_key(session, key_id)
    if old.revoked_at is not None:
        raise Conflict(f"API key '{key_id}' is revoked: create a new one", field="key")
    if old.replaced_by is not None:
        raise Conflict(
            f"API key '{key_id}' was already rotated (to '{old.replaced_by}'): rotate that one",
            field="key",
        )
    now = datetime.now(UTC)
    expires: datetime | None = None
    if old.expires_at is not None:
        expires = now + (old.expires_at - old.created_at)
    new = new_api_key()
    row = ApiKeyRow(
        id=new.id,
        prefix=new.prefix,
        key_hash=new.key_hash,
        project=old.project,
        name=old.name,
        team=old.team,
        expires_at=expires,
        scopes=list(old.scopes or ()),
        permissions=list(old.permissions or ()),
        customers=list(old.customers or ()),
        rotated_from=old.id,
        created_by=created_by,
    )
    session.add(row)
    ends = now + timedelta(seconds=grace_s)
    old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
    old.replaced_by = row.id
    session.flush()
    return old, row, new.key


def _principal(row: ApiKeyRow) -> KeyPrincipal:
    permissions = set(row.permissions or ())
    customers = set(row.customers or ())
    if "any_customer" in permissions:
        customers.add("*")
    return KeyPrincipal(
        key_id=row.id,
        project=row.project,
        name=row.name,
        team=row.team,
        scopes=frozenset(row.scopes or ()),
        expires_at=row.expires_at.timestamp() if row.expires_at is not None else None,
        can_pin="pin" in permissions,
        can_route_by_header="route_by_header" in permissions,
        customers=frozenset(customers),
    )


def active_keys(session: Session) -> dict[str, KeyPrincipal]:
    """Hash -> principal for every key not revoked: what the gateway holds in memory.

    Expired keys stay in the table for a day, so that their callers are told the key expired
    (rather than that it is unknown); the gateway refuses them by their ``expires_at``."""
    cutoff = datetime.now(UTC) - timedelta(days=1)
    rows = session.scalars(
        select(ApiKeyRow).where(
            ApiKeyRow.revoked_at.is_(None),
            (ApiKeyRow.expires_at.is_(None)) | (ApiKeyRow.expires_at > cutoff),
        )
    )
    return {row.key_hash: _principal(row) for row in rows}


def key_teams(session: Session) -> set[str]:
    """Every team some key (revoked or not) was created for: what usage reports may name."""
    return {team for team in session.scalars(select(ApiKeyRow.team).distinct()) if team}
