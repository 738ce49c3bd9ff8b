"""Credentials: data-plane API keys and the control plane's admin token.

Keys are 256 random bits, so a single sha256 is the right hash: slow password hashes
exist to protect guessable secrets, and would put milliseconds on every request.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NewKey", "hash_secret", "load_or_create_admin_token", "new_api_key"]

_KEY_PREFIX = "mp_"


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    key: str  # shown to the user once, never stored
    prefix: str  # stored and shown, so that people can tell their keys apart
    key_hash: str


def hash_secret(secret: str | bytes) -> str:
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()


def new_api_key() -> NewKey:
    key = _KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(
        id="key_" + secrets.token_hex(8),
        key=key,
        prefix=key[:11],
        key_hash=hash_secret(key),
    )


def load_or_create_admin_token(path: Path) -> tuple[str, bool]:
    """The admin token at ``path``; created with mode 0600 if missing. Returns (token, created)."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "mpa_" + secrets.token_urlsafe(32)
    # O_EXCL: two servers starting on one home at once must not both write a token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True
