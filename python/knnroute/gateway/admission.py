"""Admission: turn work away early, while it is still cheap, so the requests that are admitted are served.

Offered four times its capacity, a gateway that admits everything serves almost nothing: every request waits
behind all the others on the event loop, clients time out, and the work done for them is wasted (issue 27
measured 19 req/s served of 1,000 offered against a capacity of 200-250). :class:`Admission` is asked first
for every ``POST /v1/chat/completions`` (by :class:`~knnroute.gateway.fastpath.FastPath`, the outermost layer),
and the request is answered 503 with ``Retry-After`` at once, before auth, parsing or routing, when

* ``max_inflight`` chat requests are already in flight (streams included, until their last byte), or
* ``max_route_queue`` admitted chat requests are still before their upstream call and that queue has stood
  for ``BURST_S`` (50 ms): their body, parsing and routing are the gateway's own CPU work, so this bounds the
  work queued on the core under sustained overload, while a burst into a gateway whose queue was empty is
  admitted whole (700 requests at once: each costs well under a millisecond; the server-side CoDel of
  "Fail at Scale", ACM Queue 2015, tells a burst from a standing queue the same way). Each admitted request
  holds a :class:`Ticket` from admission until it is routed (``state.waiting``), counted at once: requests
  admitted in one loop iteration count before any of their tasks has run (the controller below reacts in
  tens of milliseconds; without this bound, 700 requests were admitted in the first 150 ms of a 4x overload
  and everyone waited half a second behind them), or
* the event loop is saturated. :class:`LoopLag` wakes every ``tick`` seconds and measures two things: how
  late it woke (the time ready work waits for the loop: requests accepted but not yet run, socket reads, the
  GIL held by routing threads) and the share of the time the loop's thread spent on the CPU. New chat
  requests are admitted with a probability ``admit`` that a controller moves at each tick, in proportion to
  the time since the last: times ``DECREASE`` (0.97) per 5 ms while the loop's CPU share is above ``max_cpu`` or its
  lag above ``max_lag_s``, up by ``INCREASE`` per 5 ms (multiplied, plus a little) while both are below.
  An integral (AIMD) controller: it settles at the share of requests the loop can serve, and the refusals of
  the rest, at a few hundredths of a millisecond each, fit in what is left of the core. All new requests are
  refused while the smoothed lag is above twice ``max_lag_s`` (the controller has not caught up yet).

  Why the CPU share and not the lag alone: at four times capacity the loop must run near its full core to
  serve 80% of capacity, and there lag is noise (each loop iteration serves what arrived during the last),
  so a low lag threshold refuses work the core had room for (at a 10 ms threshold: 57% of the core busy,
  34% of capacity served), and a high one lets queues form that clients give up on. The proportional rule
  before it (refuse ``(lag - max_lag_s) / max_lag_s``) had both problems.

The routed stage has its own bound (``max_route_queue``, in the app): requests waiting for an embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

__all__ = ["Admission", "LoopLag", "Ticket"]

DECREASE = 0.97  # admit share times this per 5 ms the loop is saturated (halved in 114 ms)
INCREASE = 1.01  # and times this (plus INCREASE_MIN) per 5 ms it is not: doubled in 0.35 s
INCREASE_MIN = 0.001  # (slow enough that admitted work shows in the CPU share before the next step)


class LoopLag:
    """How late the event loop runs a timer, smoothed (seconds), and the share of time the loop's thread is on
    the CPU (``cpu``, smoothed); started on first use in the serving loop. ``listeners`` are called at each
    tick with that tick's own lag and CPU share, and the seconds since the last tick."""

    def __init__(self, tick: float = 0.005, alpha: float = 0.25) -> None:
        self.tick, self.alpha = float(tick), float(alpha)
        self.lag = self.cpu = 0.0
        self.listeners: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        clock, cpu_clock = time.perf_counter, time.thread_time  # the loop's own thread, not routing threads
        t0, c0 = clock(), cpu_clock()
        while True:
            await asyncio.sleep(self.tick)
            t1, c1 = clock(), cpu_clock()
            dt = t1 - t0
            late, busy = max(0.0, dt - self.tick), min(1.0, (c1 - c0) / dt) if dt > 0 else 0.0
            t0, c0 = t1, c1
            self.lag += self.alpha * (late - self.lag)
            self.cpu += self.alpha * (busy - self.cpu)
            for listener in self.listeners:
                listener(late, busy, dt)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _busy_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_busy", "param": None, "code": code}}).encode()


BURST_S = 0.05  # a queue of admitted, not yet routed requests older than this is standing, not a burst


class Ticket:
    """An admitted chat request before its upstream call: counted in ``state.waiting`` until :meth:`done`
    (idempotent; also when the ticket is dropped, e.g. a request uvicorn answered itself). The first ticket
    of a queue notes when it started (``state.busy_since``)."""

    __slots__ = ("state",)

    def __init__(self, state: Any) -> None:
        self.state = state
        if not state.waiting:
            state.busy_since = time.monotonic()
        state.waiting += 1

    def done(self) -> None:
        if self.state is not None:
            self.state.waiting -= 1
            self.state = None

    def __del__(self) -> None:
        self.done()


class Admission:
    """Whether to refuse a new chat request at once (see the module docstring): :meth:`refuse` is the 503
    body, or None to admit it. ``on_reject(reason)`` is called for each refusal (metrics); ``state`` has
    ``inflight`` (counted by the caller while a request is handled) and ``waiting`` (admitted, not yet routed:
    :meth:`admit_one` hands the caller a :class:`Ticket`)."""

    def __init__(self, max_inflight: int, max_lag_s: float | None, lag: LoopLag, state: Any,
                 on_reject: Any = None, max_route_queue: int | None = None, max_cpu: float = 0.98) -> None:
        self.max_inflight, self.max_lag_s, self.lag = int(max_inflight), max_lag_s, lag
        self.max_cpu = float(max_cpu)
        self.max_route_queue = max_route_queue
        self.state, self.on_reject = state, on_reject
        self.admit = 1.0  # the share of new chat requests admitted (the lag controller's output)
        if max_lag_s is not None:
            lag.listeners.append(self.control)
        self._bodies = {
            "inflight_full": _busy_body(f"the gateway is at capacity ({max_inflight} requests in flight): retry "
                                        "after the Retry-After seconds", "inflight_full"),
            "route_queue_full": _busy_body(f"the gateway is at capacity ({max_route_queue} admitted requests wait "
                                           "for routing): retry after the Retry-After seconds", "route_queue_full"),
            "overloaded": _busy_body("the gateway is overloaded (its event loop is behind): retry after the "
                                     "Retry-After seconds", "overloaded"),
        }

    def reason(self) -> str | None:
        """Why a new chat request would be refused now, or None."""
        if self.max_lag_s is not None:
            self.lag.ensure_started()
        if self.state.inflight >= self.max_inflight:
            return "inflight_full"
        if self.max_route_queue is not None and self.state.waiting >= self.max_route_queue and \
                time.monotonic() - self.state.busy_since > BURST_S:
            return "route_queue_full"
        if self.admit < 1.0 and random.random() >= self.admit or \
                self.max_lag_s is not None and self.lag.lag > 2 * self.max_lag_s:
            return "overloaded"
        return None

    def control(self, late: float, busy: float, dt: float) -> None:
        """One step of the controller (see the module docstring): ``late`` seconds of lag and ``busy`` share
        of CPU over the ``dt`` seconds since the last tick. The step counts in 5 ms of time, so a loop so busy
        that its timer runs rarely is corrected as fast."""
        if self.max_lag_s is None:
            return
        steps = dt / 0.005
        if self.lag.lag > self.max_lag_s or self.lag.cpu > self.max_cpu:  # smoothed: one busy tick is noise
            self.admit *= DECREASE ** steps
        elif self.admit < 1.0:
            self.admit = min(1.0, self.admit * INCREASE ** steps + INCREASE_MIN * steps)

    def refuse(self) -> bytes | None:
        """The 503 body for a new chat request refused now (counted), or None to admit it."""
        why = self.reason()
        if why is None:
            return None
        if self.on_reject is not None:
            self.on_reject(why)
        return self._bodies[why]

    def admit_one(self) -> bytes | Ticket:
        """:meth:`refuse`'s 503 body, or the admitted request's :class:`Ticket`."""
        body = self.refuse()
        return Ticket(self.state) if body is None else body
