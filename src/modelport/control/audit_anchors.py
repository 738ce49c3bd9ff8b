"""Where the audit chain's head is copied outside the database: a file or a webhook.

An anchor is ``{"seq", "hash", "at"}``: whoever can rewrite the database (and recompute every
hash) cannot also rewrite what was sent away, so ``verify`` compares the chain with these
copies and a rewritten or truncated chain no longer matches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import httpx
import orjson

from modelport.core.settings import Settings
from modelport.governance.audit_chain import Anchor

__all__ = ["AnchorSink", "FileAnchors", "WebhookAnchors", "anchor_sink", "parse_anchors"]

_WEBHOOK_TIMEOUT_S = 10.0


class AnchorSink(Protocol):
    def write(self, anchor: Anchor) -> None: ...
    def read(self) -> list[Anchor]: ...
    def last(self) -> Anchor | None: ...


def anchor_sink(settings: Settings) -> AnchorSink | None:
    """The sink ``MODELPORT_AUDIT_ANCHOR`` names: an http(s) URL, a file path (default
    ``$MODELPORT_HOME/audit-anchors.jsonl``), or ``off``."""
    target = settings.audit_anchor.strip()
    if target == "off":
        return None
    if target.startswith(("http://", "https://")):
        return WebhookAnchors(target)
    return FileAnchors(
        Path(target).expanduser() if target else settings.home / "audit-anchors.jsonl"
    )


def parse_anchors(text: bytes | str, source: str = "anchors") -> list[Anchor]:
    """Anchors from JSON lines; a line that is not one raises ``ValueError`` naming it."""
    anchors = []
    lines = text.splitlines() if isinstance(text, str) else text.decode().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            anchors.append(Anchor(int(data["seq"]), str(data["hash"]), str(data.get("at", ""))))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source} line {number} is not an anchor: {exc}") from exc
    return anchors


class FileAnchors:
    """Anchors appended to a JSON-lines file, each one fsynced before it counts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, anchor: Anchor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"seq": anchor.seq, "hash": anchor.hash, "at": anchor.at}) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[Anchor]:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return []
        # A line cut short by a crash mid-write is the only one that may not parse: skip it.
        lines = text.splitlines()
        if lines and not text.endswith(b"\n"):
            lines = lines[:-1]
        return parse_anchors(b"\n".join(lines), str(self.path))

    def last(self) -> Anchor | None:
        anchors = self.read()
        return anchors[-1] if anchors else None


class WebhookAnchors:
    """Anchors POSTed as JSON to a URL; the receiver keeps them (they cannot be read back:
    give them to ``audit verify --anchors``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def write(self, anchor: Anchor) -> None:
        response = httpx.post(
            self.url,
            json={"seq": anchor.seq, "hash": anchor.hash, "at": anchor.at},
            timeout=_WEBHOOK_TIMEOUT_S,
        )
        response.raise_for_status()

    def read(self) -> list[Anchor]:
        return []

    def last(self) -> Anchor | None:
        return None
