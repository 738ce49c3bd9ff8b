"""The vLLM launcher cannot run without a GPU; the command it builds is tested here."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest
from modelport.core.replica import ReplicaSpec
from modelport.runtimes import runtime_class
from modelport.runtimes.registry import EXTERNAL_SERVERS


def _spec(tmp_path: Path, **options) -> ReplicaSpec:
    return ReplicaSpec(
        endpoint="support-chat",
        model="llama-3-8b",
        version=2,
        runtime="vllm",
        task="chat",
        artifact_dir=tmp_path,
        artifact_digest="sha256:" + "a" * 64,
        options=options,
    )


def test_vllm_serve_command(tmp_path: Path) -> None:
    vllm = runtime_class("vllm")
    spec = _spec(
        tmp_path, max_model_len=8192, gpu_memory_utilization=0.9, extra_args=["--seed", "1"]
    )
    command = vllm.replica_command(spec, "127.0.0.1", 41000, "s3cret")
    assert command == [
        "vllm",
        "serve",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--port",
        "41000",
        "--served-model-name",
        "support-chat",
        "--disable-log-requests",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--seed",
        "1",
    ]
    assert "s3cret" not in " ".join(command)  # argv is readable by every local user
    assert vllm.readiness_path == "/health"
    assert "vllm" in EXTERNAL_SERVERS


def test_vllm_gets_its_api_key_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm = runtime_class("vllm")
    monkeypatch.setenv("HF_HOME", "/models/hf")
    monkeypatch.setenv("VLLM_API_KEY", "the-servers-own")
    monkeypatch.setenv("MODELPORT_DATABASE_URL", "postgresql://u:password@db/modelport")
    env = vllm.replica_environment(_spec(tmp_path), "s3cret")
    assert env == {"VLLM_API_KEY": "s3cret", "HF_HOME": "/models/hf"}


def test_vllm_artifact_and_options_are_checked(tmp_path: Path) -> None:
    vllm = runtime_class("vllm")
    with pytest.raises(InvalidRequest, match=r"config\.json"):
        vllm.inspect(tmp_path, {})
    (tmp_path / "config.json").write_text("{}")
    assert vllm.inspect(tmp_path, {}).inputs[0].name == "prompt"
    with pytest.raises(InvalidRequest, match="extra_args"):
        vllm.replica_command(_spec(tmp_path, extra_args="--seed 1"), "127.0.0.1", 1, "t")
