"""The scikit-learn runtime: one model call per request, and no unpickling in the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelport.control import registry
from modelport.core.errors import InvalidRequest
from modelport.core.signature import Signature, TensorSpec
from modelport.runtimes.base import RuntimeSettings
from modelport.runtimes.inspection import inspect_artifact
from modelport.runtimes.sklearn import SklearnRuntime
from modelport.store import ArtifactStore, Database


async def _runtime(directory: Path, estimator: Any) -> SklearnRuntime:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / "model.joblib")
    runtime = SklearnRuntime(
        RuntimeSettings(
            name="m",
            artifact_dir=directory,
            signature=SklearnRuntime.inspect(directory, {}),
        )
    )
    await runtime.load()
    return runtime


def _refuse_predict(*_: Any) -> Any:
    raise AssertionError("predict was called: labels should come from predict_proba")


@pytest.mark.parametrize(
    ("data", "estimator"),
    [
        (load_breast_cancer, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
        (load_digits, GaussianNB()),
        (load_digits, RandomForestClassifier(n_estimators=20, random_state=0)),
    ],
)
async def test_labels_come_from_probabilities_in_one_call(
    tmp_path: Path, data: Any, estimator: Any
) -> None:
    features, target = data(return_X_y=True)
    features = features.astype(np.float32)
    estimator.fit(features, target)
    runtime = await _runtime(tmp_path, estimator)
    expected = estimator.predict(features)
    runtime._estimator.predict = _refuse_predict  # type: ignore[attr-defined]
    outputs = await runtime.predict({"input": features})
    np.testing.assert_array_equal(outputs["label"], expected)
    assert outputs["label"].dtype == expected.dtype
    np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(features))


async def test_estimators_whose_predict_is_not_the_argmax_keep_predict(tmp_path: Path) -> None:
    """A tuned threshold moves the decision away from the most probable class."""
    features, target = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    tuned = FixedThresholdClassifier(model, threshold=0.99).fit(features, target)
    expected = tuned.predict(features)
    assert (expected != tuned.classes_[tuned.predict_proba(features).argmax(axis=1)]).any()
    runtime = await _runtime(tmp_path, tuned)
    outputs = await runtime.predict({"input": features})
    np.testing.assert_array_equal(outputs["label"], expected)


async def test_data_the_estimator_refuses_is_a_400(tmp_path: Path) -> None:
    """Infinity (possible in binary data) or no rows made scikit-learn raise ValueError: 500."""
    features, target = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    runtime = await _runtime(tmp_path, model.fit(features, target))
    bad = features[:2].astype(np.float32)
    bad[1, 3] = np.inf
    for rows in (bad, bad[:0]):
        with pytest.raises(InvalidRequest, match="input 'input' refused by the model") as info:
            await runtime.predict({"input": rows})
        assert info.value.status == 400


# Registration: the pickle runs in a short-lived process, never in the server's.


class _Marker:
    """Unpickles by running code that writes its process id, then yields a real classifier."""

    def __init__(self, marker: Path, then: str = "fitted") -> None:
        self.marker, self.then = marker, then

    def __reduce__(self) -> tuple[Any, ...]:
        path = f"__import__('pathlib').Path({str(self.marker)!r})"
        write = f"{path}.write_text(str(__import__('os').getpid()))"
        then = {
            "fitted": "__import__('sklearn.dummy', fromlist=['_']).DummyClassifier()"
            ".fit([[0.0, 1.0], [1.0, 0.0]], [0, 1])",
            "exit": "__import__('os')._exit(3)",
            "hang": "__import__('time').sleep(60)",
            "fail": "1 / 0",
        }[self.then]
        return (eval, (f"({write}, {then})[1]",))


@pytest.fixture
def database(tmp_path: Path) -> Any:
    db = Database(f"sqlite:///{tmp_path / 'test.db'}")
    db.migrate()
    yield db
    db.close()


def test_registering_unpickles_outside_the_server(tmp_path: Path, database: Database) -> None:
    marker = tmp_path / "marker"
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    joblib.dump(_Marker(marker), artifact / "model.joblib")
    store = ArtifactStore(tmp_path / "artifacts")
    digest = store.ingest(artifact).digest
    with database.session() as session:
        registry.create_model(session, name="m", task="tabular")
        row = registry.create_version(
            session, store, model="m", runtime="sklearn", artifact_digest=digest
        )
        signature = Signature.model_validate(row.signature)
    assert marker.is_file(), "the pickle was not loaded at all"
    assert int(marker.read_text()) != os.getpid()
    assert signature.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 2])]
    assert [spec.name for spec in signature.outputs] == ["label", "probabilities"]


def test_failures_while_inspecting_are_clear_400s(tmp_path: Path) -> None:
    for then, message in [
        ("fail", "is not a loadable joblib file: division by zero"),
        ("exit", "exited with code 3"),
    ]:
        artifact = tmp_path / then
        artifact.mkdir()
        joblib.dump(_Marker(tmp_path / f"{then}.marker", then), artifact / "model.joblib")
        with pytest.raises(InvalidRequest, match=message) as info:
            inspect_artifact("sklearn", artifact, {})
        assert info.value.status == 400
    artifact = tmp_path / "hang"
    artifact.mkdir()
    joblib.dump(_Marker(tmp_path / "hang.marker", "hang"), artifact / "model.joblib")
    with pytest.raises(InvalidRequest, match="took longer than 3 s"):
        inspect_artifact("sklearn", artifact, {}, timeout_s=3)


def test_custom_python_models_are_not_imported_at_registration(tmp_path: Path) -> None:
    """The python runtime only checks that the module file exists; its code runs in replicas."""
    marker = tmp_path / "imported"
    (tmp_path / "model.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nclass M: ...\n"
    )
    assert inspect_artifact("python", tmp_path, {"class": "model:M"}) == Signature()
    assert not marker.exists()
