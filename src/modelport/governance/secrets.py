"""Credentials of external model servers (and webhook signing secrets), encrypted at rest.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a
key that is never in the database: ``MODELPORT_SECRETS_KEY``, or else the file
``$MODELPORT_HOME/secrets.key`` (mode 0600, created on first start). Someone holding a copy
of the database or of the secrets directory alone reads nothing.

Values never enter the API's answers or a log line either: the API takes a value and gives
back names; the control plane decrypts a value only to hand it to the gateway.

Stored form: ``mpenc1:<Fernet token>``. Anything without that prefix is plaintext from
before encryption, and is encrypted when the server starts (``SecretStore.seal``,
``control/alerts.py::seal_webhook_secrets``). A key that does not open what is stored
stops the start with ``SecretsKeyError``, rather than handing garbage to an upstream.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from modelport.core.errors import NotFound
from modelport.core.names import check_name

__all__ = ["SecretCipher", "SecretStore", "SecretsKeyError", "load_or_create_secrets_key"]

log = logging.getLogger("modelport.secrets")

_PREFIX = "mpenc1:"
KEY_FILE = "secrets.key"


class SecretsKeyError(RuntimeError):
    """The secrets key is malformed, or does not open what is stored: a startup error."""


def load_or_create_secrets_key(configured: str | None, home: Path) -> tuple[bytes, str]:
    """The Fernet key and where it came from: ``configured`` (MODELPORT_SECRETS_KEY) if set,
    else ``home/secrets.key``, created with mode 0600 if missing."""
    if configured:
        return configured.strip().encode(), "MODELPORT_SECRETS_KEY"
    path = home / KEY_FILE
    where = str(path)
    try:
        return path.read_bytes().strip(), where
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        # O_EXCL: two servers starting on one home must not both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip(), where
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.info("secrets key created in %s (keep a copy: without it no secret can be read)", path)
    return key, where


class SecretCipher:
    """Encrypts and decrypts stored secret values with one Fernet key."""

    def __init__(self, key: bytes, *, source: str = "the secrets key") -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise SecretsKeyError(
                f"{source} is not a Fernet key (32 url-safe base64-encoded bytes); make one "
                "with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
        self.source = source

    @classmethod
    def from_settings(cls, configured: str | None, home: Path) -> SecretCipher:
        """The cipher for ``MODELPORT_SECRETS_KEY`` if set, else ``home/secrets.key``."""
        key, source = load_or_create_secrets_key(configured, home)
        return cls(key, source=source)

    @staticmethod
    def is_sealed(stored: str) -> bool:
        """Whether ``stored`` is an encrypted value (else plaintext from before encryption)."""
        return stored.startswith(_PREFIX)

    def encrypt(self, value: str) -> str:
        return _PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, stored: str, *, what: str = "a secret") -> str:
        """The value of ``stored``; plaintext (not yet sealed) is returned as it is."""
        if not self.is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(_PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretsKeyError(
                f"{what} cannot be decrypted with the key from {self.source}: it was encrypted "
                "with another key. Start with the key it was stored under "
                "(MODELPORT_SECRETS_KEY or $MODELPORT_HOME/secrets.key)"
            ) from None


class SecretStore:
    """Named secrets as files (one per name, mode 0600), each value encrypted."""

    def __init__(self, root: Path, cipher: SecretCipher | None = None) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Without a cipher given, the key file next to the directory (the home's).
        self.cipher = cipher or SecretCipher.from_settings(None, root.parent)

    def seal(self) -> int:
        """Encrypt every plaintext file, and check that every encrypted one opens with this
        key (``SecretsKeyError`` if not). Returns how many were encrypted. Called at start."""
        sealed = 0
        for name in self.names():
            stored = (self._root / name).read_text()
            if self.cipher.is_sealed(stored):
                self.cipher.decrypt(stored, what=f"secret '{name}'")
                continue
            self._write(name, self.cipher.encrypt(stored))
            sealed += 1
        if sealed:
            log.info("encrypted %d secret(s) stored in plaintext before", sealed)
        return sealed

    def put(self, name: str, value: str) -> bool:
        """Store ``value`` under ``name``; True if it is new."""
        path = self._root / check_name("secret", name)
        created = not path.exists()
        self._write(name, self.cipher.encrypt(value))
        return created

    def get(self, name: str) -> str:
        path = self._root / check_name("secret", name)
        if not path.is_file():
            raise NotFound(
                f"secret '{name}' does not exist: create it with PUT /api/v1/secrets/{name}"
            )
        return self.cipher.decrypt(path.read_text(), what=f"secret '{name}'")

    def names(self) -> list[str]:
        return sorted(p.name for p in self._root.iterdir() if not p.name.startswith("."))

    def delete(self, name: str) -> None:
        path = self._root / check_name("secret", name)
        if not path.is_file():
            raise NotFound(f"secret '{name}' does not exist")
        path.unlink()

    def _write(self, name: str, stored: str) -> None:
        # Staged and renamed: a crash leaves the old value or the new one, never half of one.
        staged = self._root / f".{name}.tmp"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(stored)
        staged.replace(self._root / name)
