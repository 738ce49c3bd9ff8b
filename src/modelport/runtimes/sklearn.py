"""scikit-learn estimators saved with joblib.

Loading a joblib file runs pickle, which can execute code: only artifacts whose digest the
registry recorded are ever loaded, and the worker verifies that digest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import ModelRuntime, find_model_file

__all__ = ["SklearnRuntime"]

_SUFFIXES = (".joblib", ".pkl")


def _load(path: Path) -> Any:
    try:
        estimator = joblib.load(path)
    except Exception as exc:  # joblib/pickle raise anything at all
        raise InvalidRequest(f"{path.name} is not a loadable joblib file: {exc}") from exc
    if not hasattr(estimator, "predict"):
        raise InvalidRequest(f"{path.name} holds a {type(estimator).__name__}, not an estimator")
    return estimator


def _datatype(dtype: np.dtype[Any]) -> str:
    return {"i": "INT64", "u": "INT64", "f": "FP64", "b": "BOOL"}.get(dtype.kind, "BYTES")


class SklearnRuntime(ModelRuntime):
    """Input ``input`` (FP32, ``[N, n_features]``); outputs ``label`` and ``probabilities``."""

    #: Unpickling runs code: registration inspects in a process of its own (inspection.py).
    inspect_in_subprocess = True

    @classmethod
    def inspect(cls, artifact_dir: Path, options: dict[str, Any]) -> Signature:
        estimator = _load(find_model_file(artifact_dir, _SUFFIXES, options))
        features = int(getattr(estimator, "n_features_in_", -1))
        classes = getattr(estimator, "classes_", None)
        label_type = _datatype(np.asarray(classes).dtype) if classes is not None else "FP64"
        outputs = [TensorSpec(name="label", datatype=label_type, shape=[-1])]
        if hasattr(estimator, "predict_proba"):
            outputs.append(TensorSpec(name="probabilities", datatype="FP64", shape=[-1, -1]))
        return Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, features])],
            outputs=outputs,
        )

    async def load(self) -> None:
        path = find_model_file(self.settings.artifact_dir, _SUFFIXES, self.settings.options)
        self._estimator = _load(path)
        inputs = self.settings.signature.inputs
        self._input = inputs[0].name if inputs else "input"
        self._has_proba = hasattr(self._estimator, "predict_proba")
        self._classes = _argmax_classes(self._estimator) if self._has_proba else None

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        features = inputs[self._input]
        try:
            if not self._has_proba:
                return {"label": np.asarray(self._estimator.predict(features))}
            probabilities = np.asarray(self._estimator.predict_proba(features))
            if self._classes is not None:  # one model call, not two
                labels = self._classes[probabilities.argmax(axis=1)]
            else:
                labels = np.asarray(self._estimator.predict(features))
        except ValueError as exc:
            # scikit-learn's own input checks (infinity or NaN in binary data, no rows) raise
            # ValueError: the client's data, not a server fault.
            raise InvalidRequest(
                f"input '{self._input}' refused by the model: {exc}", param=self._input
            ) from exc
        return {"label": labels, "probabilities": probabilities}


# Classifiers whose predict is not the argmax of predict_proba: SVC's probabilities come from a
# separate Platt calibration, and threshold tuners move the decision away from 0.5.
_OWN_PREDICT = frozenset({"SVC", "NuSVC", "FixedThresholdClassifier", "TunedThresholdClassifierCV"})


def _argmax_classes(estimator: Any) -> np.ndarray | None:
    """``classes_`` when labels are ``classes_[argmax(predict_proba)]``, as for most
    single-output classifiers; ``None`` when only ``predict`` gives the right labels."""
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, list):  # multi-output: one array of classes per output
        return None
    final = estimator
    while hasattr(final, "steps"):  # a Pipeline decides with its last step
        final = final.steps[-1][1]
    if classes is None or type(final).__name__ in _OWN_PREDICT:
        return None
    classes = np.asarray(classes)
    return classes if classes.ndim == 1 and classes.size > 0 else None
