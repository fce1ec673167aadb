"""Micro-batching of routing: concurrent requests' texts are embedded in one forward pass.

With MiniLM the embedder is the gateway's bottleneck, and one forward pass over 32 texts costs far less than
32 passes over one. The first request of a batch waits at most ``wait_s`` for others (skipped when a full
batch is already queued); one batch is embedded at a time, in a worker thread, while the next one collects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import anyio

__all__ = ["Batcher"]


class Batcher:
    """``await submit(item)`` -> ``fn([items])[i]``; ``fn`` runs in a thread on up to ``max_batch`` items.

    ``fn`` returns one result per item; a result that is an exception is raised to that item's caller only.
    Items whose caller has gone (cancelled: the client left) are dropped before ``fn`` runs. When ``fn``
    itself raises, each item of that batch is run again alone, so one bad item never fails the others.
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 64,
                 wait_s: float = 0.002) -> None:
        self.fn, self.max_batch, self.wait_s = fn, int(max_batch), float(wait_s)
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Any) -> Any:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        out = await fut
        if isinstance(out, BaseException):
            raise out
        return out

    async def _run(self, queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]]) -> None:
        while True:
            batch = [await queue.get()]
            if queue.qsize() < self.max_batch - 1 and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(it, fut) for it, fut in batch if not fut.done()]  # callers gone: no work for them
            if not batch:
                continue
            items = [it for it, _ in batch]
            try:
                results: Sequence[Any] = await anyio.to_thread.run_sync(self.fn, items)
            except Exception:  # the batch failed as a whole: isolate the item that did it
                results = [await anyio.to_thread.run_sync(self._one, it) for it in items]
            self.batches += 1
            self.items += len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    def _one(self, item: Any) -> Any:
        try:
            return self.fn([item])[0]
        except Exception as e:  # noqa: BLE001 - handed to this item's caller only
            return e

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
