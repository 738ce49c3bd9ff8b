"""Alert delivery to a real local HTTP server: signed, retried on 5xx, once per episode."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelport.control.alerts import (
    DbEpisodeStore,
    WebhookCreate,
    check_webhook_url,
    create_webhook,
    delete_webhook,
    list_episodes,
    list_webhooks,
)
from modelport.core.errors import InvalidRequest, NotFound
from modelport.core.settings import Settings
from modelport.governance.secrets import SecretCipher
from modelport.observability.alerts import Alerts, Webhook, WebhookSender, sign
from modelport.store import Database
from modelport.store.tables import AlertWebhookRow

SECRET = "s3cret-of-sixteen+"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers ``statuses`` in turn (then 200) and
    keeps every request it got."""

    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """The notices answered 2xx whose signature checks out with ``secret``."""
        out = []
        for request in self.requests:
            if request["status"] >= 300:
                continue
            headers, body = request["headers"], request["body"]
            expected = hmac.new(
                secret.encode(),
                headers["x-modelport-timestamp"].encode() + b"." + body,
                hashlib.sha256,
            ).hexdigest()
            assert headers["x-modelport-signature"] == f"sha256={expected}"
            assert abs(int(headers["x-modelport-timestamp"]) - time.time()) < 120
            out.append(json.loads(body))
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


def serve_receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    """Run a ``Receiver`` in a thread until the generator is closed."""
    got = Receiver(statuses=list(statuses or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with lock:
                status = got.statuses.pop(0) if got.statuses else 200
                got.requests.append(
                    {
                        "status": status,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
    database.migrate()
    return database


def _settings(tmp_path: Path, **kwargs: Any) -> Settings:
    return Settings(home=tmp_path, port=8600, **kwargs)


def test_signature_covers_timestamp_and_body() -> None:
    body = b'{"a":1}'
    signature = sign("key", "1700000000", body)
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected
    assert sign("key", "1700000001", body) != signature  # a replayed body, a new time
    assert "secret" not in repr(Webhook("wh_1", "http://x", "secret"))


async def test_retried_after_a_500_and_delivered_once_per_episode(
    db: Database, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500]  # the first attempt fails
    with db.session() as session:
        created = create_webhook(
            session, WebhookCreate(url=receiver.url, secret=SECRET), _settings(tmp_path)
        )
    # The secret is stored encrypted, under the key in the settings' home.
    cipher = SecretCipher.from_settings(None, tmp_path)
    alerts = Alerts(DbEpisodeStore(db, cipher), WebhookSender(backoff_s=0.05))
    assert await alerts.open("k1", "slo_burn", "e", "burning", {"rate": 20.0})
    assert not await alerts.open("k1", "slo_burn", "e", "burning again", {})  # same episode
    await alerts.drain()
    # The same key again from a restarted server: still the same episode, nothing sent.
    restarted = Alerts(DbEpisodeStore(db, cipher), WebhookSender(backoff_s=0.05))
    await restarted.start()
    assert not await restarted.open("k1", "slo_burn", "e", "burning", {})
    await restarted.drain()

    assert [r["status"] for r in receiver.requests] == [500, 200]
    (notice,) = receiver.verified(SECRET)
    assert notice["event"] == "alert.opened"
    assert notice["key"] == "k1" and notice["kind"] == "slo_burn" and notice["endpoint"] == "e"
    assert notice["data"] == {"rate": 20.0}
    assert receiver.requests[1]["headers"]["x-modelport-event"] == "alert.opened"

    assert await restarted.close("k1")
    assert not await restarted.close("k1")
    await restarted.drain()
    resolved = receiver.verified(SECRET)[-1]
    assert resolved["event"] == "alert.resolved" and resolved["id"] == notice["id"]
    assert resolved["closed_at"] is not None
    # A new episode of the same key is a new notice.
    assert await restarted.open("k1", "slo_burn", "e", "burning", {})
    await restarted.drain()
    assert [n["event"] for n in receiver.verified(SECRET)] == [
        "alert.opened",
        "alert.resolved",
        "alert.opened",
    ]
    with db.session() as session:
        episodes = list_episodes(session)
    assert [(e.state, e.open_delivery, e.close_delivery) for e in episodes] == [
        ("open", "sent", None),
        ("closed", "sent", "sent"),
    ]
    assert created.secret == SECRET
    await alerts.aclose()
    await restarted.aclose()


async def test_4xx_is_not_retried_and_connection_errors_are_bounded(
    db: Database, tmp_path: Path
) -> None:
    refuses = serve_receiver([404])
    receiver = next(refuses)
    sender = WebhookSender(attempts=3, backoff_s=0.01)
    assert not await sender.send(Webhook("wh_a", receiver.url, SECRET), b"{}", "alert.opened")
    assert [r["status"] for r in receiver.requests] == [404]
    refuses.close()
    # Nobody listens there any more: three attempts, then given up.
    started = time.monotonic()
    assert not await sender.send(Webhook("wh_a", receiver.url, SECRET), b"{}", "alert.opened")
    assert time.monotonic() - started < 5
    await sender.close()

    with db.session() as session:
        session.add(AlertWebhookRow(id="wh_gone", url=receiver.url, secret=SECRET))
    alerts = Alerts(DbEpisodeStore(db), sender)
    await alerts.open("k", "drift", "e", "drifting", {})
    await alerts.drain()
    with db.session() as session:
        (episode,) = list_episodes(session)
    assert episode.open_delivery == "failed"
    await alerts.aclose()


async def test_pending_notices_are_sent_on_start(db: Database, receiver: Receiver) -> None:
    store = DbEpisodeStore(db)
    with db.session() as session:
        session.add(AlertWebhookRow(id="wh_1", url=receiver.url, secret=SECRET))
    store.open("k", "slo_budget", "e", "spent", {})  # a server stopped before sending it
    alerts = Alerts(store, WebhookSender(backoff_s=0.01))
    await alerts.start()
    await alerts.drain()
    assert [n["key"] for n in receiver.verified(SECRET)] == ["k"]
    await alerts.aclose()


async def test_delivery_does_not_block_the_loop(db: Database) -> None:
    # A receiver that never answers: open() returns at once, the loop keeps running.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    with db.session() as session:
        session.add(AlertWebhookRow(id="wh_1", url=url, secret=SECRET))
    alerts = Alerts(DbEpisodeStore(db), WebhookSender(timeout_s=30))
    started = time.monotonic()
    assert await alerts.open("k", "slo_burn", "e", "burning", {})
    assert time.monotonic() - started < 2
    await asyncio.sleep(0.05)
    await alerts.aclose()  # cancels the stuck delivery; the notice stays pending
    listener.close()
    with db.session() as session:
        (episode,) = list_episodes(session)
    assert episode.open_delivery == "pending"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("http://[::1", "not a valid URL"),
        ("http://example.com:99999/", "not a valid URL"),
        ("https://user:pw@example.com/hook", "must not hold a user or password"),
        ("http://169.254.169.254/latest", "link-local or cloud metadata"),
        ("http://metadata.google.internal/", "cloud metadata service"),
        ("http://127.0.0.1:8600/api", "this Modelport server itself"),
    ],
)
def test_bad_webhook_url_is_400_naming_url(
    url: str, fragment: str, db: Database, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest) as refused, db.session() as session:
        create_webhook(session, WebhookCreate(url=url), _settings(tmp_path))
    assert refused.value.status == 400
    assert refused.value.details["field"] == "url"
    assert fragment in refused.value.message
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(AlertWebhookRow)) == 0


def test_webhook_policy_follows_allow_internal_upstreams(tmp_path: Path) -> None:
    # A receiver on loopback at another port is allowed (tests, a local relay).
    assert check_webhook_url("http://127.0.0.1:9000/h", _settings(tmp_path)).endswith("/h")
    allowed = _settings(tmp_path, allow_internal_upstreams=True)
    assert check_webhook_url("http://169.254.169.254/x", allowed)


def test_secret_is_write_only(db: Database, tmp_path: Path) -> None:
    with db.session() as session:
        created = create_webhook(
            session,
            WebhookCreate(url="https://hooks.example.com/x", description="ops"),
            _settings(tmp_path),
        )
    assert created.secret.startswith("mpw_")  # generated when none was given, shown once
    with db.session() as session:
        (listed,) = list_webhooks(session)
    assert "secret" not in listed.model_dump()
    assert listed.id == created.id and listed.description == "ops"
    with db.session() as session:
        delete_webhook(session, created.id)
    with pytest.raises(NotFound, match="webhook 'wh_nope' does not exist"), db.session() as s:
        delete_webhook(s, "wh_nope")
