"""API key service: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelport.control.schemas import KeyPublic
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.names import check_name
from modelport.core.routing import KeyPrincipal
from modelport.governance import new_api_key
from modelport.store.tables import ApiKeyRow

__all__ = ["active_keys", "create_key", "key_public", "key_teams", "list_keys", "revoke_key"]


def key_public(row: ApiKeyRow) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        prefix=row.prefix,
        project=row.project,
        name=row.name,
        team=row.team,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_key(
    session: Session, *, project: str, name: str, team: str = ""
) -> tuple[ApiKeyRow, str]:
    """A new key row and the plaintext key, which is never stored.

    ``team`` (optional, ``""`` for none) is whom the key's usage and cost are reported under.
    """
    check_name("project", project)
    if team:
        try:
            check_name("team", team)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field="team", param="team") from None
    new = new_api_key()
    row = ApiKeyRow(
        id=new.id,
        prefix=new.prefix,
        key_hash=new.key_hash,
        project=project,
        name=name,
        team=team,
    )
    session.add(row)
    session.flush()
    return row, new.key


def list_keys(session: Session) -> list[ApiKeyRow]:
    return list(session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)))


def revoke_key(session: Session, key_id: str) -> ApiKeyRow:
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"API key '{key_id}' does not exist")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row


def active_keys(session: Session) -> dict[str, KeyPrincipal]:
    """Hash -> principal for every key that still works: what the gateway holds in memory."""
    rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None)))
    return {
        row.key_hash: KeyPrincipal(key_id=row.id, project=row.project, name=row.name, team=row.team)
        for row in rows
    }


def key_teams(session: Session) -> set[str]:
    """Every team some key (revoked or not) was created for: what usage reports may name."""
    return {team for team in session.scalars(select(ApiKeyRow.team).distinct()) if team}
