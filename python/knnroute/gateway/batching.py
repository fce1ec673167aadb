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

__all__ = ["Batcher", "QueueWaitExceeded"]


class QueueWaitExceeded(Exception):
    """An item waited longer than ``max_wait_s`` for its batch: its answer would come too late to be worth
    the work (the caller refuses the request with a 503 instead)."""


class Batcher:
    """``await submit(item)`` -> ``fn([items])[i]``; ``fn`` runs in a thread on up to ``max_batch`` items.

    ``fn`` returns one result per item; a result that is an exception is raised to that item's caller only.
    Items whose caller has gone (cancelled: the client left) are dropped before ``fn`` runs. When ``fn``
    itself raises, each item of that batch is run again alone, so one bad item never fails the others.
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 64,
                 wait_s: float = 0.002, max_wait_s: float | None = None) -> None:
        self.fn, self.max_batch, self.wait_s = fn, int(max_batch), float(wait_s)
        self.max_wait_s = max_wait_s
        self.stale = 0  # items refused for waiting longer than max_wait_s
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any], float]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Any) -> Any:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        await self._queue.put((item, fut, loop.time()))
        out = await fut
        if isinstance(out, BaseException):
            raise out
        return out

    async def _run(self, queue: asyncio.Queue[tuple[Any, asyncio.Future[Any], float]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            got = [await queue.get()]
            if queue.qsize() < self.max_batch - 1 and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            while len(got) < self.max_batch and not queue.empty():
                got.append(queue.get_nowait())
            now = loop.time()
            batch = []
            for it, fut, t in got:
                if fut.done():  # the caller has gone: no work for it
                    continue
                if self.max_wait_s is not None and now - t - self.wait_s > self.max_wait_s:
                    self.stale += 1
                    fut.set_result(QueueWaitExceeded(f"waited {now - t:.3f} s for routing"))
                    continue
                batch.append((it, fut))
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
