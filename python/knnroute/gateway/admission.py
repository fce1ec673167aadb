"""Admission: turn work away early, while it is still cheap, so the requests that are admitted are served.

Offered four times its capacity, a gateway that admits everything serves almost nothing: every request waits
behind all the others on the event loop, clients time out, and the work done for them is wasted (issue 27
measured 19 req/s served of 1,000 offered against a capacity of 200-250). :class:`AdmissionMiddleware` sits
outermost on ``POST /v1/chat/completions`` and answers 503 with ``Retry-After`` at once, before any other
middleware, parsing or routing, when

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

from knnroute.service.middleware import ASGIApp, Receive, Scope, Send

__all__ = ["AdmissionMiddleware", "LoopLag"]

GUARDED = "/v1/chat/completions"


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


class AdmissionMiddleware:
    """503 at once for chat requests beyond ``max_inflight``, while ``max_route_queue`` wait for routing, or
    while the loop lags over ``max_lag_s``.

    ``on_reject(reason)`` is called for each refusal (metrics); ``state`` has ``inflight`` (counted here) and
    ``routing`` (counted by the app)."""

    def __init__(self, app: ASGIApp, max_inflight: int, max_lag_s: float | None, lag: LoopLag,
                 state: Any, on_reject: Any = None, max_route_queue: int | None = None) -> None:
        self.app, self.max_inflight, self.max_lag_s, self.lag = app, int(max_inflight), max_lag_s, lag
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != GUARDED:
            await self.app(scope, receive, send)
            return
        if self.max_lag_s is not None:
            self.lag.ensure_started()
        reason = None
        if self.state.inflight >= self.max_inflight:
            reason = "inflight_full"
        elif self.max_route_queue is not None and self.state.routing >= self.max_route_queue:
            reason = "route_queue_full"
        elif self.max_lag_s is not None and self.lag.lag > self.max_lag_s and \
                random.random() < (self.lag.lag - self.max_lag_s) / self.max_lag_s:
            reason = "overloaded"
        if reason is not None:
            if self.on_reject is not None:
                self.on_reject(reason)
            body = self._bodies[reason]
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.state.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.inflight -= 1
