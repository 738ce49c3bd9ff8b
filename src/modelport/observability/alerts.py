"""Alerts: episodes opened and closed by whoever watches something, sent to webhooks.

``Alerts.open(key, kind, endpoint, summary, data)`` starts an *episode* unless one with that
key is open, and notifies every webhook once; ``Alerts.close(key)`` ends it with a resolved
notice. Episodes live in an ``EpisodeStore`` (the database, in ``control/alerts.py``), so a
restarted server neither sends an open episode again nor forgets to resolve it.

Delivery runs in background tasks and never blocks the caller or the event loop: a POST of
the notice's JSON with::

    X-Modelport-Timestamp: <unix seconds>
    X-Modelport-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>

Connection errors, timeouts and 5xx answers are retried with exponential backoff, a bounded
number of times; a 4xx answer is the receiver refusing the notice, and is not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx
import orjson

from modelport import __version__

__all__ = [
    "Alerts",
    "Delivery",
    "Episode",
    "EpisodeStore",
    "Webhook",
    "WebhookSender",
    "sign",
]

log = logging.getLogger("modelport.alerts")

Event = Literal["alert.opened", "alert.resolved"]
Delivery = Literal["pending", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    url: str
    secret: str = field(repr=False)  # never in a log line


@dataclass(frozen=True, slots=True)
class Episode:
    """One stretch of time an alert was open."""

    id: int
    key: str
    kind: str
    endpoint: str
    summary: str
    data: dict[str, Any]
    opened_at: datetime
    closed_at: datetime | None = None

    def notice(self, event: Event) -> dict[str, Any]:
        """The JSON a webhook receives; ``id`` and ``event`` together identify it."""
        return {
            "id": self.id,
            "event": event,
            "key": self.key,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "summary": self.summary if event == "alert.opened" else f"resolved: {self.summary}",
            "data": self.data,
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


class EpisodeStore(Protocol):
    """Where episodes and webhooks are kept. Blocking: ``Alerts`` calls it in a thread."""

    def open_keys(self) -> set[str]:
        """The keys of every open episode."""
        ...

    def open(
        self, key: str, kind: str, endpoint: str, summary: str, data: dict[str, Any]
    ) -> Episode | None:
        """Start an episode; ``None`` if one with ``key`` is open already."""
        ...

    def close(self, key: str) -> Episode | None:
        """End the open episode with ``key``; ``None`` if there is none."""
        ...

    def webhooks(self) -> list[Webhook]: ...

    def delivered(self, episode_id: int, event: Event, outcome: Delivery) -> None:
        """Record how sending ``event`` of the episode ended."""
        ...

    def undelivered(self) -> list[tuple[Episode, Event]]:
        """Notices whose sending a stopped server left pending."""
        ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Modelport-Signature`` value: a receiver recomputes it to trust the body.

    The timestamp is signed with the body so that a captured notice cannot be replayed later
    under a fresh timestamp; receivers should also refuse old timestamps."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookSender:
    """POSTs signed notices; retries what may succeed later, a bounded number of times."""

    def __init__(
        self,
        *,
        attempts: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # No redirects: a receiver cannot bounce the signed notice somewhere else.
            self._http = httpx.AsyncClient(
                timeout=self.timeout_s, follow_redirects=False, trust_env=False
            )
        return self._http

    async def send(self, webhook: Webhook, body: bytes, event: Event) -> bool:
        """Deliver ``body``; ``True`` once a 2xx (or 3xx) answer came back."""
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "user-agent": f"modelport/{__version__}",
                "x-modelport-event": event,
                "x-modelport-timestamp": timestamp,
                "x-modelport-signature": sign(webhook.secret, timestamp, body),
            }
            try:
                response = await self._client().post(webhook.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    log.warning(
                        "webhook %s refused %s (%s): not retried", webhook.id, event, problem
                    )
                    return False
            if attempt < self.attempts:
                log.info(
                    "webhook %s: %s attempt %d failed (%s); retrying in %.1f s",
                    webhook.id,
                    event,
                    attempt,
                    problem,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        log.warning(
            "webhook %s: %s not delivered after %d attempts (%s)",
            webhook.id,
            event,
            self.attempts,
            problem,
        )
        return False

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class Alerts:
    """Opens and closes episodes and has their notices delivered in the background."""

    def __init__(self, store: EpisodeStore, sender: WebhookSender | None = None) -> None:
        self.store = store
        self.sender = sender or WebhookSender()
        self._open: set[str] | None = None  # loaded on first use: the store is the truth
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[int, asyncio.Task[None]] = {}  # each episode's latest delivery
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the open episodes and send what a stopped server left pending."""
        async with self._lock:
            self._open = await asyncio.to_thread(self.store.open_keys)
        for episode, event in await asyncio.to_thread(self.store.undelivered):
            self._deliver(episode, event)

    async def open_keys(self) -> set[str]:
        """The keys of the open episodes."""
        async with self._lock:
            if self._open is None:
                self._open = await asyncio.to_thread(self.store.open_keys)
            return set(self._open)

    async def open(
        self, key: str, kind: str, endpoint: str, summary: str, data: dict[str, Any]
    ) -> bool:
        """Start the episode ``key`` and notify the webhooks; ``False`` if it is open."""
        async with self._lock:
            if self._open is None:
                self._open = await asyncio.to_thread(self.store.open_keys)
            if key in self._open:
                return False
            episode = await asyncio.to_thread(self.store.open, key, kind, endpoint, summary, data)
            self._open.add(key)
        if episode is None:  # opened by someone else meanwhile (another server)
            return False
        log.warning("alert opened: %s", summary)
        self._deliver(episode, "alert.opened")
        return True

    async def close(self, key: str) -> bool:
        """End the episode ``key`` with a resolved notice; ``False`` if none is open."""
        async with self._lock:
            if self._open is not None and key not in self._open:
                return False
            episode = await asyncio.to_thread(self.store.close, key)
            if self._open is not None:
                self._open.discard(key)
        if episode is None:
            return False
        log.info("alert resolved: %s", episode.summary)
        self._deliver(episode, "alert.resolved")
        return True

    def _deliver(self, episode: Episode, event: Event) -> None:
        # One episode's notices go out in order: a resolved notice never overtakes the
        # opened one that is still being retried.
        before = self._last.get(episode.id)
        task = asyncio.create_task(self._send(episode, event, before))
        self._last[episode.id] = task
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        for episode_id, last in list(self._last.items()):
            if last is task:
                del self._last[episode_id]

    async def _send(
        self, episode: Episode, event: Event, before: asyncio.Task[None] | None
    ) -> None:
        if before is not None:
            await asyncio.wait({before})
        try:
            body = orjson.dumps(episode.notice(event))
            webhooks = await asyncio.to_thread(self.store.webhooks)
            results: Sequence[bool] = await asyncio.gather(
                *(self.sender.send(webhook, body, event) for webhook in webhooks)
            )
            outcome: Delivery = "sent" if all(results) else "failed"
            await asyncio.to_thread(self.store.delivered, episode.id, event, outcome)
        except Exception:  # a delivery must never take its caller down
            log.exception("sending %s of alert %s failed", event, episode.key)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait a little for deliveries in flight (tests, and a clean shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def aclose(self) -> None:
        """Stop: cancel deliveries still retrying (their notices stay pending and are sent
        again on the next start), then close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        await self.sender.close()
