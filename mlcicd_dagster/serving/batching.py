"""Dynamic micro-batching: concurrent requests to one model are scored in one call.

One worker task per loaded model takes everything queued (up to ``max_batch_rows``),
scores it in a thread (the event loop keeps accepting and parsing requests meanwhile)
and hands each request its slice. While a batch is being scored the next one fills up,
so the batch size follows the load by itself: one row at a time when idle, dozens under
load, and the cost of a model call is shared by every request in it. ``max_wait_ms``
optionally lets a lone request wait for company.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np


class BatcherClosed(RuntimeError):
    """The model was retired; the request should be retried on the current deployment."""


class MicroBatcher:
    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        *,
        executor: Executor | None,
        max_batch_rows: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self._score = score
        self._executor = executor
        self._max_rows = max(1, int(max_batch_rows))
        self._max_wait = max(0.0, float(max_wait_s))
        self._on_batch = on_batch
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future[Any]]] = collections.deque()
        self.queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def idle(self) -> bool:
        return not self._queue

    async def submit(self, matrix: np.ndarray) -> np.ndarray:
        """The model's output for the rows of ``matrix`` (first axis = rows), scored together
        with concurrent requests."""
        if self._closed:
            raise BatcherClosed("model retired")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((matrix, fut))
        self.queued_rows += len(matrix)
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    async def close(self) -> None:
        """Score what is queued, then stop."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._max_wait > 0 and self.queued_rows < self._max_rows and not self._closed:
                await asyncio.sleep(self._max_wait)
            batch = [self._queue.popleft()]
            rows = len(batch[0][0])
            while self._queue and rows + len(self._queue[0][0]) <= self._max_rows:
                item = self._queue.popleft()
                batch.append(item)
                rows += len(item[0])
            self.queued_rows -= rows
            matrix = batch[0][0] if len(batch) == 1 else np.concatenate([m for m, _ in batch])
            t0 = loop.time()
            try:
                if self._executor is None:  # inline: no thread hand-off (best on few cores)
                    preds = self._score(matrix)
                else:
                    preds = await loop.run_in_executor(self._executor, self._score, matrix)
                preds = np.asarray(preds)
                if preds.ndim == 0 or len(preds) != rows:
                    raise RuntimeError(f"model answered {preds.shape[:1]} rows for {rows}")
            except Exception as exc:  # the model failed: every request in the batch gets it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(rows, loop.time() - t0)
            start = 0
            for m, fut in batch:
                end = start + len(m)
                if not fut.done():
                    fut.set_result(preds[start:end])
                start = end
