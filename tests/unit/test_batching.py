from __future__ import annotations

import asyncio

import numpy as np
import pytest

from modelport.core.errors import InvalidRequest
from modelport.runtimes.batching import AdaptiveBatcher, BatchingConfig


class _Model:
    """Doubles its input and records the batch sizes it was called with."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = inputs["x"].shape[0]
        self.calls.append(rows)
        await asyncio.sleep(0.001)
        if self.fail_on is not None and rows >= self.fail_on:
            raise ValueError("model failed")
        return {"y": inputs["x"] * 2, "n": np.full(rows, rows)}


async def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = _Model()
    batcher = AdaptiveBatcher(model.predict, BatchingConfig(max_batch_size=64, max_wait_ms=20))
    requests = [np.full((i % 3 + 1, 2), float(i)) for i in range(10)]
    results = await asyncio.gather(*(batcher.predict({"x": r}) for r in requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request * 2)
    assert len(model.calls) < 10  # merged
    assert sum(model.calls) == sum(len(r) for r in requests)
    await batcher.close()


async def test_batches_respect_the_size_limit_and_shapes() -> None:
    model = _Model()
    batcher = AdaptiveBatcher(model.predict, BatchingConfig(max_batch_size=4, max_wait_ms=20))
    same = [batcher.predict({"x": np.ones((1, 2))}) for _ in range(8)]
    other = batcher.predict({"x": np.ones((1, 5))})  # a different row width: never merged
    results = await asyncio.gather(*same, other)
    assert max(model.calls) <= 4
    assert results[-1]["y"].shape == (1, 5)
    await batcher.close()


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    model = _Model()
    batcher = AdaptiveBatcher(model.predict, BatchingConfig(max_batch_size=64, max_wait_ms=5))
    started = asyncio.get_running_loop().time()
    await batcher.predict({"x": np.ones((1, 2))})
    assert asyncio.get_running_loop().time() - started < 0.5
    assert model.calls == [1]
    await batcher.close()


async def test_a_failing_model_fails_each_caller() -> None:
    model = _Model(fail_on=1)
    batcher = AdaptiveBatcher(model.predict, BatchingConfig(max_batch_size=8, max_wait_ms=20))
    results = await asyncio.gather(
        *(batcher.predict({"x": np.ones((1, 2))}) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    # the batcher survives: the next request works
    model.fail_on = None
    assert (await batcher.predict({"x": np.ones((1, 2))}))["y"].shape == (1, 2)
    await batcher.close()


async def test_one_bad_request_does_not_fail_its_batch() -> None:
    """A request the model refuses (an image that does not decode) fails alone."""

    async def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] < 0).any():
            raise InvalidRequest("negative input")
        return {"y": inputs["x"] * 2}

    batcher = AdaptiveBatcher(predict, BatchingConfig(max_batch_size=8, max_wait_ms=20))
    values = [1.0, -1.0, 2.0, 3.0]
    results = await asyncio.gather(
        *(batcher.predict({"x": np.full((1, 2), v)}) for v in values), return_exceptions=True
    )
    assert isinstance(results[1], InvalidRequest)
    for value, result in zip(values, results, strict=True):
        if value > 0:
            assert isinstance(result, dict) and result["y"].tolist() == [[value * 2] * 2]
    await batcher.close()


async def test_requests_that_cannot_be_split_by_rows_run_alone() -> None:
    """Scalars and inputs of different lengths used to raise IndexError or mis-split."""
    calls: list[dict[str, tuple[int, ...]]] = []

    async def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append({name: a.shape for name, a in inputs.items()})
        await asyncio.sleep(0.001)
        return {"sum": np.asarray(sum(float(a.sum()) for a in inputs.values()))}

    batcher = AdaptiveBatcher(predict, BatchingConfig(max_batch_size=8, max_wait_ms=20))
    requests = [
        {"x": np.asarray(2.0)},
        {"x": np.ones((2, 2)), "m": np.ones(3)},
        {"x": np.ones((1, 2)), "m": np.ones(1)},
        {"x": np.ones((1, 2)), "m": np.ones(1)},
    ]
    results = await asyncio.gather(*(batcher.predict(r) for r in requests))
    # The model's scalar output is not one row per input row: no merged call is split.
    assert [float(r["sum"]) for r in results] == [2.0, 7.0, 3.0, 3.0]
    assert {
        "x": (),
    } in calls and {"x": (2, 2), "m": (3,)} in calls
    await batcher.close()


@pytest.mark.parametrize("rows", [1, 7])
async def test_single_request_is_passed_through_untouched(rows: int) -> None:
    model = _Model()
    batcher = AdaptiveBatcher(model.predict, BatchingConfig(max_batch_size=64, max_wait_ms=1))
    result = await batcher.predict({"x": np.arange(rows * 2.0).reshape(rows, 2)})
    assert result["n"].tolist() == [rows] * rows
    await batcher.close()
