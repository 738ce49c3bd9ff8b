from __future__ import annotations

import stat
from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest, ModelportError, NotFound
from modelport.core.names import ModelRef, parse_model_ref
from modelport.core.routing import Route, Upstream
from modelport.core.settings import Settings
from modelport.gateway.balancing import LeastOutstanding
from modelport.governance import hash_secret, load_or_create_admin_token, new_api_key
from modelport.runtimes import runtime_class


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("iris", ModelRef("iris")),
        ("iris:3", ModelRef("iris", version=3)),
        ("iris@champion", ModelRef("iris", alias="champion")),
    ],
)
def test_model_refs_round_trip(text: str, ref: ModelRef) -> None:
    assert parse_model_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", ["iris:0", "iris:x", "Iris", "iris@", "@x", "a b"])
def test_bad_model_refs(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_model_ref(text)


def test_errors_carry_status_code_and_details() -> None:
    error = NotFound("model 'x' does not exist", model="x")
    assert isinstance(error, ModelportError)
    assert error.to_dict() == {
        "code": "not_found",
        "message": "model 'x' does not exist",
        "details": {"model": "x"},
    }
    assert error.status == 404


def test_settings_read_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("MODELPORT_PORT", "9000")
    settings = Settings()
    assert settings.port == 9000
    assert settings.home == (tmp_path / "h").resolve()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'h' / 'modelport.db'}"
    assert settings.host == "127.0.0.1"  # loopback unless asked otherwise


def test_relative_home_is_made_absolute(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELPORT_HOME", raising=False)
    assert Settings().home == tmp_path / ".modelport"


def test_api_keys_are_random_and_hashed() -> None:
    one, two = new_api_key(), new_api_key()
    assert one.key != two.key and one.id != two.id
    assert one.key_hash == hash_secret(one.key)
    assert one.key not in (one.key_hash, one.prefix) and one.key.startswith(one.prefix)


def test_admin_token_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "admin-token"
    token, created = load_or_create_admin_token(path)
    again, created_again = load_or_create_admin_token(path)
    assert created and not created_again and token == again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unknown_runtime_names_the_choices() -> None:
    with pytest.raises(InvalidRequest, match="choose one of llama-cpp, onnx, openai-upstream"):
        runtime_class("tensorflow")
    assert runtime_class("onnx").__name__ == "OnnxRuntime"


def test_least_outstanding_balancing() -> None:
    a, b, c = (Upstream("127.0.0.1", port) for port in (1, 2, 3))
    route = Route("ep", "m", 1, b"{}", b"t", (a, b, c))
    balancer = LeastOutstanding()
    # Idle replicas take turns.
    assert {balancer.choose(route) for _ in range(3)} == {a, b, c}
    with balancer.track(a), balancer.track(b):
        assert all(balancer.choose(route) == c for _ in range(5))  # the idle one
        with balancer.track(c), balancer.track(c):
            assert balancer.choose(route) in (a, b)
    assert balancer.in_flight(a) == balancer.in_flight(c) == 0
    assert all(balancer.choose(route, skip=a) != a for _ in range(6))
    assert balancer.choose(Route("ep", "m", 1, b"{}", b"t")) is None
