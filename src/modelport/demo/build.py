"""``breast-cancer``: a classifier on scikit-learn's bundled data, exported to ONNX.

Everything comes from installed packages; nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_ENDPOINT", "DemoAssets", "build_demo", "build_demo_candidate", "build_digits"]

DEMO_ENDPOINT = "breast-cancer"
_REFERENCE_ROWS = 200


@dataclass(frozen=True, slots=True)
class DemoAssets:
    directory: Path
    model: Path
    metrics: dict[str, Any]
    reference: Path

    @classmethod
    def at(cls, directory: Path) -> DemoAssets | None:
        """The assets in ``directory`` if a complete build is there."""
        metrics = directory / "metrics.json"
        model, reference = directory / "model.onnx", directory / "reference.csv"
        if not (metrics.is_file() and model.is_file() and reference.is_file()):
            return None
        return cls(directory, model, json.loads(metrics.read_text()), reference)


def _export(
    directory: Path,
    model: Any,
    classifier: Any,
    features: int,
    metrics: dict[str, Any],
    header: list[str],
    reference_rows: Any,
) -> DemoAssets:
    """Export a fitted scikit-learn model to ONNX (input ``input``, FP32 [N, features]) with
    its metrics and a reference sample of its training data."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, features]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    directory.mkdir(parents=True, exist_ok=True)
    # Write to temporary names and rename, so that an interrupted build is never taken as done.
    staged = directory / "model.onnx.tmp"
    staged.write_bytes(onnx_model.SerializeToString())
    staged.replace(directory / "model.onnx")
    with (directory / "reference.csv.tmp").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(reference_rows[:_REFERENCE_ROWS].tolist())
    (directory / "reference.csv.tmp").replace(directory / "reference.csv")
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    assets = DemoAssets.at(directory)
    assert assets is not None
    return assets


def build_demo(out_dir: Path, *, force: bool = False) -> DemoAssets:
    """Train, evaluate and export the demo model into ``out_dir/breast-cancer``."""
    return _breast_cancer(out_dir / DEMO_ENDPOINT, "logistic", force=force)


def build_demo_candidate(out_dir: Path, *, force: bool = False) -> DemoAssets:
    """A second breast-cancer model, k-nearest neighbours on the same split and features, for
    ``modelport compare``: the demo registers it as version 2 and routes nothing to it. It is
    a little less accurate than the logistic regression on the held-out split (0.951 against
    0.958), which a comparison should show."""
    return _breast_cancer(out_dir / f"{DEMO_ENDPOINT}-knn", "knn", force=force)


def _breast_cancer(directory: Path, kind: str, *, force: bool) -> DemoAssets:
    """One classifier (``logistic`` or ``knn``) on scikit-learn's breast-cancer data, scaled,
    trained and scored on the same stratified split, exported to ONNX."""
    if not force and (existing := DemoAssets.at(directory)):
        return existing

    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    features = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    classifier = (
        LogisticRegression(max_iter=1000) if kind == "logistic" else KNeighborsClassifier(5)
    )
    model = make_pipeline(StandardScaler(), classifier)
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics: dict[str, Any] = {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "f1": round(float(f1_score(y_test, predicted)), 4),
    }
    if kind == "logistic":  # its probabilities rank; k-NN's are votes of five
        auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
        metrics["roc_auc"] = round(float(auc), 4)
    metrics["test_rows"] = len(y_test)
    header = [str(name) for name in data.feature_names]
    return _export(directory, model, model.steps[-1][1], 30, metrics, header, x_train)


def build_digits(out_dir: Path, *, force: bool = False) -> DemoAssets:
    """Train a digit classifier on scikit-learn's bundled 8x8 images; export it to ONNX."""
    directory = out_dir / "digits"
    if not force and (existing := DemoAssets.at(directory)):
        return existing

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    data = load_digits()
    pixels = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    metrics = {
        "accuracy": round(float(accuracy_score(y_test, model.predict(x_test))), 4),
        "test_rows": len(y_test),
    }
    header = [f"pixel_{i}" for i in range(64)]
    return _export(directory, model, model, 64, metrics, header, x_train)
