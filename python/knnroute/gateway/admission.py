"""Admission: turn work away early, while it is still cheap, so the requests that are admitted are served.

Offered four times its capacity, a gateway that admits everything serves almost nothing: every request waits
behind all the others on the event loop, clients time out, and the work done for them is wasted (issue 27
measured 19 req/s served of 1,000 offered against a capacity of 200-250). :class:`Admission` is asked first
for every ``POST /v1/chat/completions`` (by :class:`~knnroute.gateway.fastpath.FastPath`, the outermost layer),
and the request is answered 503 with ``Retry-After`` at once, before auth, parsing or routing, when

* ``max_inflight`` chat requests are already in flight (streams included, until their last byte), or
* ``max_route_queue`` routed requests already wait for their embedding and decision (the routing thread is
  the bottleneck: refusing here costs no body parsing at all), or
* the event loop is late: :class:`LoopLag` wakes every ``tick`` seconds and measures how late it woke (the
  time ready work waits for the loop). Above ``max_lag_s`` (smoothed) a share of new chat requests is
  refused that grows with the excess, ``(lag - max_lag_s) / max_lag_s``, all of them from twice the
  threshold: a proportional controller, which holds the loop near the threshold instead of swinging between
  admitting everything and nothing. Lag is the signal that work is queueing where no counter sees it
  (requests accepted but not yet run, socket reads, the GIL held by routing threads).

The routed stage has its own bound (``max_route_queue``, in the app): requests waiting for an embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

__all__ = ["Admission", "LoopLag"]

class LoopLag:
    """How late the event loop runs a timer, smoothed (seconds); started on first use in the serving loop."""

    def __init__(self, tick: float = 0.005, alpha: float = 0.25) -> None:
        self.tick, self.alpha = float(tick), float(alpha)
        self.lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.tick)
            late = max(0.0, loop.time() - t0 - self.tick)
            self.lag += self.alpha * (late - self.lag)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _busy_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_busy", "param": None, "code": code}}).encode()


class Admission:
    """Whether to refuse a new chat request at once (see the module docstring): :meth:`refuse` is the 503
    body, or None to admit it. ``on_reject(reason)`` is called for each refusal (metrics); ``state`` has
    ``inflight`` (counted by the caller while a request is handled) and ``routing`` (counted by the app)."""

    def __init__(self, max_inflight: int, max_lag_s: float | None, lag: LoopLag, state: Any,
                 on_reject: Any = None, max_route_queue: int | None = None) -> None:
        self.max_inflight, self.max_lag_s, self.lag = int(max_inflight), max_lag_s, lag
        self.max_route_queue = max_route_queue
        self.state, self.on_reject = state, on_reject
        self._bodies = {
            "inflight_full": _busy_body(f"the gateway is at capacity ({max_inflight} requests in flight): retry "
                                        "after the Retry-After seconds", "inflight_full"),
            "route_queue_full": _busy_body("the gateway is at capacity (requests wait for routing): retry after the "
                                           "Retry-After seconds", "route_queue_full"),
            "overloaded": _busy_body("the gateway is overloaded (its event loop is behind): retry after the "
                                     "Retry-After seconds", "overloaded"),
        }

    def reason(self) -> str | None:
        """Why a new chat request would be refused now, or None."""
        if self.max_lag_s is not None:
            self.lag.ensure_started()
        if self.state.inflight >= self.max_inflight:
            return "inflight_full"
        if self.max_route_queue is not None and self.state.routing >= self.max_route_queue:
            return "route_queue_full"
        if self.max_lag_s is not None and self.lag.lag > self.max_lag_s and \
                random.random() < (self.lag.lag - self.max_lag_s) / self.max_lag_s:
            return "overloaded"
        return None

    def refuse(self) -> bytes | None:
        """The 503 body for a new chat request refused now (counted), or None to admit it."""
        why = self.reason()
        if why is None:
            return None
        if self.on_reject is not None:
            self.on_reject(why)
        return self._bodies[why]
