"""Adaptive batching: concurrent requests merged into one model call and split back.

The first request of a batch waits at most ``max_wait_ms`` for company; a batch closes early
once it holds ``max_batch_size`` rows. Under light load a request pays almost nothing; under
heavy load a small tabular or vision model answers many requests for the price of one call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["AdaptiveBatcher", "BatchingConfig"]

Predict = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple[object, ...]
    future: asyncio.Future[dict[str, np.ndarray]]


def _rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The rows every input shares along its first axis; ``None`` if they share none (a
    scalar input, or inputs of different lengths): such a request is never merged."""
    lengths = {a.shape[0] if a.ndim else None for a in inputs.values()}
    rows = lengths.pop() if len(lengths) == 1 else None
    return rows if inputs else None


def _signature(inputs: dict[str, np.ndarray]) -> tuple[object, ...]:
    """Requests merge only when their inputs agree in name, dtype and all but the first axis."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


class AdaptiveBatcher:
    """Feeds ``predict`` with batches; one batch at a time, so the model is never contended."""

    def __init__(self, predict: Predict, config: BatchingConfig) -> None:
        self._predict = predict
        self._config = config
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="modelport-batcher")
        rows = _rows(inputs)
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        # A request that cannot be split by rows still queues, so that the model is never
        # called twice at once; it fills a batch of its own.
        key = _signature(inputs) if rows is not None else (object(),)
        await self._queue.put(
            _Pending(inputs, self._config.max_batch_size if rows is None else rows, key, future)
        )
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        carry: _Pending | None = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = asyncio.get_running_loop().time() + self._config.max_wait_ms / 1000
            while rows < self._config.max_batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    item = (
                        self._queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if item.key != first.key or rows + item.rows > self._config.max_batch_size:
                    carry = item  # starts the next batch
                    break
                batch.append(item)
                rows += item.rows
            await self._call(batch)

    async def _call(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.done()]  # callers that gave up
        if len(live) == 1:
            await self._alone(live[0])
            return
        if not live:
            return
        total = sum(item.rows for item in live)
        try:
            merged = {
                name: np.concatenate([item.inputs[name] for item in live])
                for name in live[0].inputs
            }
            outputs = await self._predict(merged)
        except Exception:
            # One caller's bad input (an image that does not decode) must not fail the others
            # of its batch: each runs alone and gets its own answer or error.
            outputs = None
        if outputs is None or any(np.ndim(v) == 0 or len(v) != total for v in outputs.values()):
            for item in live:  # failed, or outputs that are not one row per input row
                await self._alone(item)
            return
        start = 0
        for item in live:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({name: value[start:end] for name, value in outputs.items()})
            start = end

    async def _alone(self, item: _Pending) -> None:
        if item.future.done():
            return
        try:
            outputs = await self._predict(item.inputs)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(outputs)
