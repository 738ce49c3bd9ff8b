"""Secrets at rest: encrypted files and webhook secrets, the key outside the database, plaintext
from before encrypted on start, and a wrong key a clear error rather than garbage."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from modelport.control.alerts import (
    DbEpisodeStore,
    WebhookCreate,
    create_webhook,
    seal_webhook_secrets,
)
from modelport.core.errors import NotFound
from modelport.core.settings import Settings
from modelport.governance.secrets import SecretCipher, SecretsKeyError, SecretStore
from modelport.store import Database
from modelport.store.tables import AlertWebhookRow

VALUE = "sk-live-0123456789abcdef"


def _db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'modelport.db'}")
    database.migrate()
    return database


def test_values_are_encrypted_on_disk_and_the_key_file_is_private(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    assert store.put("openai", VALUE) is True
    stored = (tmp_path / "secrets" / "openai").read_bytes()
    assert VALUE.encode() not in stored and stored.startswith(b"mpenc1:")
    assert store.get("openai") == VALUE
    key_file = tmp_path / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A second store on the same home reads the same key (a restart).
    assert SecretStore(tmp_path / "secrets").get("openai") == VALUE
    assert store.names() == ["openai"]
    store.delete("openai")
    with pytest.raises(NotFound):
        store.get("openai")


def test_a_configured_key_is_used_and_no_key_file_written(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    cipher = SecretCipher.from_settings(key, tmp_path)
    store = SecretStore(tmp_path / "secrets", cipher)
    store.put("hf", VALUE)
    assert not (tmp_path / "secrets.key").exists()
    token = (tmp_path / "secrets" / "hf").read_text().removeprefix("mpenc1:")
    assert Fernet(key.encode()).decrypt(token.encode()).decode() == VALUE


def test_plaintext_files_are_encrypted_on_start(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir()
    (root / "legacy").write_text(VALUE)  # as stored before encryption at rest
    store = SecretStore(root)
    assert store.get("legacy") == VALUE  # readable before it is sealed
    assert store.seal() == 1
    assert VALUE not in (root / "legacy").read_text()
    assert store.get("legacy") == VALUE
    assert store.seal() == 0  # once


def test_a_wrong_key_is_a_clear_error_not_garbage(tmp_path: Path) -> None:
    SecretStore(tmp_path / "secrets").put("openai", VALUE)
    other = SecretCipher(Fernet.generate_key(), source="MODELPORT_SECRETS_KEY")
    store = SecretStore(tmp_path / "secrets", other)
    with pytest.raises(SecretsKeyError, match="secret 'openai' cannot be decrypted with the key"):
        store.seal()
    with pytest.raises(SecretsKeyError, match="MODELPORT_SECRETS_KEY"):
        store.get("openai")


def test_a_malformed_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretsKeyError, match="not a Fernet key"):
        SecretCipher.from_settings("not-a-key", tmp_path)


def test_webhook_secrets_are_stored_encrypted_and_still_sign(tmp_path: Path) -> None:
    db = _db(tmp_path)
    cipher = SecretCipher.from_settings(None, tmp_path)
    with db.session() as session:
        created = create_webhook(
            session,
            WebhookCreate(url="https://hooks.example.com/x", secret=VALUE),
            Settings(home=tmp_path, port=8600),
            cipher,
        )
    with db.session() as session:
        stored = session.scalar(select(AlertWebhookRow.secret))
    assert stored is not None and VALUE not in stored
    (webhook,) = DbEpisodeStore(db, cipher).webhooks()
    assert webhook.id == created.id and webhook.secret == VALUE
    wrong = SecretCipher(Fernet.generate_key())
    with pytest.raises(SecretsKeyError, match=f"webhook '{created.id}'"):
        seal_webhook_secrets(db, wrong)


def test_plaintext_webhook_secrets_are_encrypted_on_start(tmp_path: Path) -> None:
    db = _db(tmp_path)
    with db.session() as session:  # a row written before encryption at rest
        session.add(AlertWebhookRow(id="wh_old", url="https://h.example.com/", secret=VALUE))
    cipher = SecretCipher.from_settings(None, tmp_path)
    assert seal_webhook_secrets(db, cipher) == 1
    with db.session() as session:
        stored = session.scalar(select(AlertWebhookRow.secret))
    assert stored is not None and VALUE not in stored
    assert DbEpisodeStore(db, cipher).webhooks()[0].secret == VALUE
    assert seal_webhook_secrets(db, cipher) == 0
