"""Alert webhooks (where notices go) and alert episodes (what was sent), in the database.

``DbEpisodeStore`` is the ``EpisodeStore`` that ``observability.alerts.Alerts`` keeps its
episodes in; the functions below back ``/api/v1/alerts``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelport.control.upstream_policy import check_upstream_url
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.settings import Settings
from modelport.governance.secrets import SecretCipher, SecretsKeyError
from modelport.observability.alerts import Delivery, Episode, Event, Webhook
from modelport.store import Database
from modelport.store.tables import AlertEpisodeRow, AlertWebhookRow

__all__ = [
    "DbEpisodeStore",
    "EpisodePublic",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookPublic",
    "check_webhook_url",
    "create_webhook",
    "delete_webhook",
    "list_episodes",
    "list_webhooks",
    "seal_webhook_secrets",
]

_MAX_URL = 2048


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(examples=["https://hooks.example.com/modelport"])
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="Signs every notice (HMAC-SHA256). Omitted: one is generated and shown "
        "once in the answer. Never shown again.",
    )
    description: str = Field(default="", max_length=200)


class WebhookPublic(BaseModel):
    id: str
    url: str
    description: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Shown only in this response: give it to the receiver.")


class EpisodePublic(BaseModel):
    id: int
    key: str
    kind: str
    endpoint: str
    summary: str
    data: dict[str, Any]
    state: Literal["open", "closed"]
    opened_at: datetime
    closed_at: datetime | None
    open_delivery: str
    close_delivery: str | None


def check_webhook_url(url: str, settings: Settings) -> str:
    """``url`` if notices may be sent there, else ``InvalidRequest`` naming ``url``.

    The same policy as external endpoints' URLs: no link-local or cloud metadata address,
    not this server itself, unless ``MODELPORT_ALLOW_INTERNAL_UPSTREAMS`` allows it."""
    url = url.strip()
    if len(url) > _MAX_URL:
        raise InvalidRequest(f"url must be at most {_MAX_URL} characters", field="url", param="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidRequest(f"url {url!r} is not a valid URL", field="url", param="url") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest(
            f"url must be an http:// or https:// URL with a host, got {url!r}",
            field="url",
            param="url",
        )
    if parts.username is not None or parts.password is not None:
        # The URL is listed back; a credential in it would be shown to every admin.
        raise InvalidRequest(
            "url must not hold a user or password: the webhook's secret signs each notice",
            field="url",
            param="url",
        )
    try:
        check_upstream_url(
            url,
            own=(settings.host, settings.port),
            allow_internal=settings.allow_internal_upstreams,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, field="url", param="url") from None
    return url


def _public(row: AlertWebhookRow) -> WebhookPublic:
    return WebhookPublic(
        id=row.id, url=row.url, description=row.description, created_at=row.created_at
    )


def create_webhook(
    session: Session, body: WebhookCreate, settings: Settings, cipher: SecretCipher | None = None
) -> WebhookCreated:
    """Store a webhook; the answer holds its secret, the only time it is shown. The stored
    secret is encrypted (``cipher``, by default the one the settings name)."""
    url = check_webhook_url(body.url, settings)
    secret = body.secret or "mpw_" + secrets.token_urlsafe(32)
    if cipher is None:
        secret_key = settings.secrets_key
        configured = secret_key.get_secret_value() if secret_key is not None else None
        cipher = SecretCipher.from_settings(configured, settings.home)
    row = AlertWebhookRow(
        id="wh_" + secrets.token_hex(8),
        url=url,
        secret=cipher.encrypt(secret),
        description=body.description,
    )
    session.add(row)
    session.flush()
    return WebhookCreated(**_public(row).model_dump(), secret=secret)


def list_webhooks(session: Session) -> list[WebhookPublic]:
    rows = session.scalars(select(AlertWebhookRow).order_by(AlertWebhookRow.created_at))
    return [_public(row) for row in rows]


def delete_webhook(session: Session, webhook_id: str) -> None:
    row = session.get(AlertWebhookRow, webhook_id)
    if row is None:
        raise NotFound(f"webhook '{webhook_id}' does not exist", field="id", param="id")
    session.delete(row)


def _episode_public(row: AlertEpisodeRow) -> EpisodePublic:
    return EpisodePublic(
        id=row.id,
        key=row.key,
        kind=row.kind,
        endpoint=row.endpoint,
        summary=row.summary,
        data=row.data,
        state="open" if row.open_key is not None else "closed",
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        open_delivery=row.open_delivery,
        close_delivery=row.close_delivery,
    )


def list_episodes(
    session: Session,
    *,
    state: Literal["open", "closed", "all"] = "all",
    endpoint: str | None = None,
    limit: int = 100,
) -> list[EpisodePublic]:
    """Episodes, newest first; open ones first when ``state`` is ``all``."""
    query = select(AlertEpisodeRow)
    if state == "open":
        query = query.where(AlertEpisodeRow.open_key.is_not(None))
    elif state == "closed":
        query = query.where(AlertEpisodeRow.open_key.is_(None))
    if endpoint is not None:
        query = query.where(AlertEpisodeRow.endpoint == endpoint)
    query = query.order_by(AlertEpisodeRow.closed_at.is_not(None), AlertEpisodeRow.id.desc())
    return [_episode_public(row) for row in session.scalars(query.limit(limit))]


def _episode(row: AlertEpisodeRow) -> Episode:
    return Episode(
        id=row.id,
        key=row.key,
        kind=row.kind,
        endpoint=row.endpoint,
        summary=row.summary,
        data=row.data,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
    )


class DbEpisodeStore:
    """The ``EpisodeStore`` in the database. Blocking: called in threads."""

    def __init__(self, db: Database, cipher: SecretCipher | None = None) -> None:
        self.db = db
        # Opens the webhooks' encrypted secrets; without one, only plaintext (old) rows can be
        # used and an encrypted one raises SecretsKeyError.
        self.cipher = cipher

    def open_keys(self) -> set[str]:
        with self.db.session() as session:
            query = select(AlertEpisodeRow.open_key).where(AlertEpisodeRow.open_key.is_not(None))
            return {key for key in session.scalars(query) if key is not None}

    def open(
        self, key: str, kind: str, endpoint: str, summary: str, data: dict[str, Any]
    ) -> Episode | None:
        try:
            with self.db.session() as session:
                query = select(AlertEpisodeRow.id).where(AlertEpisodeRow.open_key == key)
                if session.scalar(query) is not None:
                    return None
                row = AlertEpisodeRow(
                    key=key,
                    open_key=key,
                    kind=kind,
                    endpoint=endpoint,
                    summary=summary,
                    data=data,
                    opened_at=datetime.now(UTC),
                    open_delivery="pending",
                )
                session.add(row)
                session.flush()
                return _episode(row)
        except IntegrityError:  # another writer opened it between the check and the insert
            return None

    def close(self, key: str) -> Episode | None:
        with self.db.session() as session:
            row = session.scalar(select(AlertEpisodeRow).where(AlertEpisodeRow.open_key == key))
            if row is None:
                return None
            row.open_key = None
            row.closed_at = datetime.now(UTC)
            row.close_delivery = "pending"
            session.flush()
            return _episode(row)

    def webhooks(self) -> list[Webhook]:
        with self.db.session() as session:
            rows = session.scalars(select(AlertWebhookRow).order_by(AlertWebhookRow.created_at))
            return [Webhook(row.id, row.url, self._open(row)) for row in rows]

    def _open(self, row: AlertWebhookRow) -> str:
        what = f"the signing secret of webhook '{row.id}'"
        if self.cipher is None:
            if SecretCipher.is_sealed(row.secret):
                raise SecretsKeyError(f"{what} is encrypted and no secrets key was given")
            return row.secret
        return self.cipher.decrypt(row.secret, what=what)

    def delivered(self, episode_id: int, event: Event, outcome: Delivery) -> None:
        with self.db.session() as session:
            row = session.get(AlertEpisodeRow, episode_id)
            if row is None:
                return
            if event == "alert.opened":
                row.open_delivery = outcome
            else:
                row.close_delivery = outcome

    def undelivered(self) -> list[tuple[Episode, Event]]:
        pending: list[tuple[Episode, Event]] = []
        with self.db.session() as session:
            query = select(AlertEpisodeRow).where(
                (AlertEpisodeRow.open_delivery == "pending")
                | (AlertEpisodeRow.close_delivery == "pending")
            )
            for row in session.scalars(query.order_by(AlertEpisodeRow.id)):
                if row.open_delivery == "pending":
                    pending.append((_episode(row), "alert.opened"))
                if row.close_delivery == "pending":
                    pending.append((_episode(row), "alert.resolved"))
        return pending


def seal_webhook_secrets(db: Database, cipher: SecretCipher) -> int:
    """Encrypt the signing secrets stored in plaintext (before encryption at rest), and check
    that the encrypted ones open with ``cipher`` (``SecretsKeyError`` if not). Returns how
    many were encrypted. Blocking: called once at start, in a thread."""
    sealed = 0
    with db.session() as session:
        for row in session.scalars(select(AlertWebhookRow)):
            if cipher.is_sealed(row.secret):
                cipher.decrypt(row.secret, what=f"the signing secret of webhook '{row.id}'")
            else:
                row.secret = cipher.encrypt(row.secret)
                sealed += 1
    return sealed
