"""Adaptive batching on vs off: tabular throughput at concurrency 32, side by side.

Starts ``modelport serve --demo`` (breast-cancer only), registers a tabular model and
serves it from two endpoints, one unbatched and one with adaptive batching, then drives both
through the gateway with the same load, alternating phases. Prints requests/s, p50 and p99
and the ratio.

``--model mlp`` (default) is a neural network on the breast-cancer features (30 -> 2048 ->
2048 -> 2), where loading the weights costs more than a row, as for most neural models;
``--model demo`` is the demo logistic regression, whose call costs microseconds, so that
batching cannot beat the per-request HTTP work there.

    .venv/bin/python -m bench.batching --seconds 6 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import httpx

from bench._harness import Phase, drive, modelport_server, table, wait_ready
from modelport.core.routing import Upstream
from modelport.gateway.upstream import UpstreamPool

BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
).encode()


def build_mlp(directory: Path) -> Path:
    """A 30 -> 2048 -> 2048 -> 2 network on the breast-cancer data, exported to ONNX."""
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    features = data.data.astype(np.float32)
    # Accuracy does not matter here, only the cost of a call: a few epochs will do.
    mlp = MLPClassifier(hidden_layer_sizes=(2048, 2048), max_iter=5, random_state=0)
    model = make_pipeline(StandardScaler(), mlp).fit(features, data.target)
    onnx_model = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 30]))],
        options={id(mlp): {"zipmap": False}},
        target_opset=17,
    )
    path = directory / "mlp.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def deploy(url: str, admin: dict[str, str], args: argparse.Namespace, tmp: Path) -> str:
    """Create the unbatched and batched endpoints; returns the model reference they serve."""
    ref = "breast-cancer:1"
    if args.model == "mlp":
        path = build_mlp(tmp)
        httpx.post(
            f"{url}/api/v1/models", json={"name": "mlp", "task": "tabular"}, headers=admin
        ).raise_for_status()
        httpx.post(
            f"{url}/api/v1/models/mlp/versions",
            json={"runtime": "onnx", "artifact_path": str(path)},
            headers=admin,
            timeout=60,
        ).raise_for_status()
        ref = "mlp:1"
    batching = {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms}
    for name, options in (("unbatched", None), ("batched", batching)):
        httpx.post(
            f"{url}/api/v1/endpoints",
            json={"name": name, "model": ref, "batching": options},
            headers=admin,
        ).raise_for_status()
        wait_ready(url, admin, name)
    return ref


async def measure(port: int, key: str, args: argparse.Namespace) -> dict[str, Phase]:
    upstream = Upstream("127.0.0.1", port)
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]
    paths = {name: f"/v2/models/{name}/infer" for name in ("unbatched", "batched")}
    results = {name: Phase() for name in paths}
    pool = UpstreamPool()
    try:
        for path in paths.values():  # warm up
            await drive(pool, upstream, path, headers, BODY, 1.0, args.concurrency)
        for _ in range(args.rounds):
            for name, path in paths.items():
                phase = await drive(
                    pool,
                    upstream,
                    path,
                    headers,
                    BODY,
                    args.seconds / args.rounds,
                    args.concurrency,
                )
                results[name].merge(phase)
    finally:
        await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per target")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--model", choices=("mlp", "demo"), default="mlp")
    args = parser.parse_args()
    with modelport_server("breast-cancer") as server, tempfile.TemporaryDirectory() as tmp:
        ref = deploy(server.url, server.admin, args, Path(tmp))
        results = asyncio.run(measure(server.port, server.key, args))
    rows = {name: phase.summary() for name, phase in results.items()}
    print(
        f"model {ref}, concurrency {args.concurrency}, {args.seconds:.0f} s per target, "
        f"max_batch_size {args.max_batch_size}, max_wait_ms {args.max_wait_ms}"
    )
    print(table(rows))
    ratio = rows["batched"]["rps"] / rows["unbatched"]["rps"]
    print(f"throughput ratio batched/unbatched: {ratio:.2f}")


if __name__ == "__main__":
    main()
