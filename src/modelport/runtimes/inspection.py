"""Inspect an artifact at registration, in a short-lived process when that runs user code.

Loading a scikit-learn artifact unpickles it, which runs whatever code the pickle names: that
must never happen inside the server, which holds the database, the admin token and every
secret. Such runtimes say ``inspect_in_subprocess = True``; their ``inspect`` then runs in
``python -m modelport.runtimes.inspection``, with a minimal environment and a timeout, and
answers the signature as JSON on stdout. Its errors come back as the same 4xx as in-process.

A subprocess is no sandbox (it runs as the server's user and can read what it can read), but
it keeps the server's memory, its open database connection and its environment out of reach,
and a pickle that hangs or crashes takes only itself down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import modelport
from modelport.core import errors
from modelport.core.environment import minimal_environment
from modelport.core.errors import InvalidRequest, ModelportError
from modelport.core.signature import Signature
from modelport.runtimes.registry import runtime_class

__all__ = ["INSPECT_TIMEOUT_S", "inspect_artifact"]

INSPECT_TIMEOUT_S = 120.0


def _environment() -> dict[str, str]:
    """A replica's minimal environment (no secret of the server's), for one small process."""
    # The same Modelport as the server's, installed or run from a source tree.
    source = str(Path(modelport.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))
    # A model's own threads have no work to share at inspection; keep the process small.
    extra = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return minimal_environment(os.environ, extra={"PYTHONPATH": path, **extra})


def _error(raw: dict[str, Any]) -> ModelportError:
    """The error the inspecting process raised, as the same class here."""
    kind = getattr(errors, str(raw.get("type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, ModelportError) else InvalidRequest
    return cls(str(raw.get("message")), **dict(raw.get("details") or {}))


def inspect_artifact(
    runtime: str,
    artifact_dir: Path,
    options: dict[str, Any],
    *,
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> Signature:
    """The artifact's signature from ``runtime``'s ``inspect``; in a subprocess when that
    loads user code (see the module's docstring)."""
    cls = runtime_class(runtime)
    if not getattr(cls, "inspect_in_subprocess", False):
        return cls.inspect(artifact_dir, options)
    request = json.dumps(
        {"runtime": runtime, "artifact_dir": str(artifact_dir), "options": options}
    )
    with tempfile.TemporaryDirectory(prefix="modelport-inspect-") as scratch:
        try:
            done = subprocess.run(
                # cwd: an empty directory, so that no file there shadows a module.
                [sys.executable, "-m", "modelport.runtimes.inspection"],
                input=request.encode(),
                capture_output=True,
                env=_environment(),
                cwd=scratch,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InvalidRequest(
                f"inspecting this {runtime} artifact took longer than {timeout_s:.0f} s: does "
                "loading it wait for something?",
                field="artifact",
            ) from None
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError, UnicodeDecodeError):
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise InvalidRequest(
            f"inspecting this {runtime} artifact failed (the loading process exited with "
            f"code {done.returncode}): {tail or 'no output'}",
            field="artifact",
        ) from None
    if "error" in answer:
        raise _error(answer["error"])
    return Signature.model_validate(answer["signature"])


def _main() -> None:
    """Read one request from stdin, answer one JSON line on stdout."""
    request = json.loads(sys.stdin.read())
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever the model's code prints must not garble the answer
    try:
        signature = runtime_class(request["runtime"]).inspect(
            Path(request["artifact_dir"]), request["options"]
        )
        answer: dict[str, Any] = {"signature": signature.model_dump()}
    except ModelportError as exc:
        answer = {
            "error": {"type": type(exc).__name__, "message": exc.message, "details": exc.details}
        }
    sys.stdout = real_stdout
    print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    _main()
