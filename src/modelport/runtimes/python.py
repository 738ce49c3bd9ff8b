"""Custom models: a user's Python class shipped in the artifact directory.

Option ``class`` names it as ``module:Class`` (the module is a file in the artifact). The
class is built with no arguments; ``load()`` is called once if it exists, then
``predict(inputs)`` maps a dict of numpy arrays to a dict of numpy arrays. Either may be
``async``. The signature must be given at registration: deriving it would mean running the
user's code inside the control plane.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature
from modelport.runtimes.base import ModelRuntime

__all__ = ["PythonRuntime"]


def _target(artifact_dir: Path, options: dict[str, Any]) -> tuple[Path, str]:
    target = options.get("class")
    if not isinstance(target, str) or ":" not in target:
        raise InvalidRequest(
            "the python runtime needs the option class='module:Class' (module.py in the artifact)",
            field="runtime_options",
        )
    module, _, name = target.partition(":")
    path = (artifact_dir / (module.replace(".", "/") + ".py")).resolve()
    if not path.is_relative_to(artifact_dir.resolve()) or not path.is_file():
        raise InvalidRequest(
            f"module {module!r} is not a file in the artifact", field="runtime_options"
        )
    return path, name


class PythonRuntime(ModelRuntime):
    max_concurrency = 4

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        _target(artifact_dir, options)  # the file exists; its code is not run here
        return Signature()

    async def load(self) -> None:
        path, name = _target(self.settings.artifact_dir, self.settings.options)
        spec = importlib.util.spec_from_file_location(f"modelport_user.{path.stem}", path)
        if spec is None or spec.loader is None:
            raise InvalidRequest(f"cannot import {path.name}")
        module = importlib.util.module_from_spec(spec)
        # The artifact directory is content-addressed and its digest is checked at every
        # start: a __pycache__ written into it would make the revision's next replica refuse
        # to load ("artifact digest mismatch").
        sys.dont_write_bytecode = True
        sys.path.insert(0, str(self.settings.artifact_dir))  # its own helper modules
        spec.loader.exec_module(module)
        self._model = getattr(module, name)()
        # Synchronous user code runs on one thread of its own, one call at a time as the
        # model was written for, and never on the event loop: health probes keep answering.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        if hasattr(self._model, "load"):
            await self._call(self._model.load)

    async def _call(self, method: Any, *args: Any) -> Any:
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        result = await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)
        return await result if inspect.isawaitable(result) else result

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = await self._call(self._model.predict, inputs)
        if not isinstance(result, dict):
            raise TypeError(f"{type(self._model).__name__}.predict must return a dict of arrays")
        return {name: np.asarray(value) for name, value in result.items()}

    async def unload(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
