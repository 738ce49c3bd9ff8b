"""A replica's environment: the server's secrets never reach it."""

from __future__ import annotations

from modelport.core.environment import minimal_environment


def test_only_allowlisted_variables_pass() -> None:
    allowed = {
        "PATH": "/usr/bin",
        "HOME": "/home/mp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp/mp",
        "PYTHONPATH": "/opt/lib",
        "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
    }
    server = {
        **allowed,
        "MODELPORT_DATABASE_URL": "postgresql://modelport:hunter2@db/modelport",
        "MODELPORT_HOME": "/srv/modelport",
        "MODELPORT_LOG_LEVEL": "debug",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "OPENAI_API_KEY": "sk-secret",
        "PGPASSWORD": "hunter2",
        "SSH_AUTH_SOCK": "/run/agent",
    }
    env = minimal_environment(server)
    assert env == allowed


def test_what_a_runtime_declares_is_added() -> None:
    env = minimal_environment({"PATH": "/bin"}, extra={"VLLM_API_KEY": "k"})
    assert env == {"PATH": "/bin", "VLLM_API_KEY": "k"}
