"""Forwarding to OpenAI-compatible upstreams: one connection pool per upstream (``max_connections``; a
hanging upstream fills its own pool, never another's), bounded retries with exponential backoff on connect
errors, 429 and 5xx (timeouts only with ``retry_timeouts``), every try bounded by the request's overall
deadline, a circuit breaker per upstream (:mod:`knnroute.gateway.breaker`), and a clear failure when the
tries run out (the caller then tries the next model). A cancelled request (the client left) cancels its
upstream call. Upstream keys come from environment variables and are only ever put in the outgoing
``Authorization`` header.

The HTTP client is the gateway's own (:mod:`knnroute.gateway.http1`): httpx's pool (httpcore 1.0) probed every
idle connection's socket on each request (a third of the gateway's CPU at 64 concurrent requests), and aiohttp,
which replaced it, was still about a third of the CPU of a routed request (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from knnroute.gateway.breaker import Breaker
from knnroute.gateway.config import GatewayConfig
from knnroute.gateway.http1 import Pool, Response, UpstreamError, UpstreamTimeout

__all__ = ["Attempt", "UpstreamFailure", "UpstreamResponse", "Upstreams", "unresolved"]

log = logging.getLogger("knnroute.gateway")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 2.0


@dataclass
class Attempt:
    """One try at one upstream, for the decision log."""

    model: str
    status: int | None
    latency_s: float
    error: str | None = None


class UpstreamFailure(Exception):
    """Every retry of one upstream failed; ``reason`` says how (never a key or a prompt)."""

    def __init__(self, model: str, reason: str, timeout: bool, circuit_open: bool = False) -> None:
        super().__init__(f"{model}: {reason}")
        self.model, self.reason, self.timeout, self.circuit_open = model, reason, timeout, circuit_open


class UpstreamResponse:
    """An upstream's answer: status and headers; ``content`` (read) or ``aiter_raw`` (streaming)."""

    def __init__(self, resp: Response, content: bytes | None, read_timeout: float | None = None) -> None:
        self._resp, self._read_timeout = resp, read_timeout
        self.status_code = resp.status
        self.headers = resp.headers
        self.content = content if content is not None else b""

    def json(self) -> Any:
        return json.loads(self.content)

    async def aiter_raw(self) -> Any:
        async for chunk in self._resp.iter_chunks(self._read_timeout):
            yield chunk

    async def aclose(self, complete: bool = True) -> None:
        """Release the connection (``complete``) or close it, which cancels an unfinished upstream request."""
        if complete:
            self._resp.release()
        else:
            self._resp.close()


@dataclass
class Upstreams:
    """The configured upstreams, one HTTP session (pool) and one circuit breaker each; sessions are created
    on first use, in the serving loop."""

    cfg: GatewayConfig
    _sessions: dict[str, Pool] = field(default_factory=dict, repr=False)
    breakers: dict[str, Breaker] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, up in self.cfg.upstreams.items():
            self.breakers[name] = Breaker(up.breaker_failures, up.breaker_cooldown_s)

    @property
    def names(self) -> list[str]:
        return list(self.cfg.upstreams)

    def session(self, name: str) -> Pool:
        s = self._sessions.get(name)
        if s is None:
            up = self.cfg.upstreams[name]
            s = self._sessions[name] = Pool(up.base_url, up.max_connections, keepalive_s=30.0)
        return s

    def in_use(self, name: str) -> int:
        """Connections of ``name``'s pool in use now."""
        s = self._sessions.get(name)
        return 0 if s is None else s.in_use

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.aclose()

    def _failed(self, name: str, breaker: Breaker, reason: str) -> None:
        if breaker.failure():
            log.warning("upstream %r: circuit opened after %d consecutive failures (last: %s); skipped for %g s, "
                        "then one request probes it", name, breaker.consecutive, reason, breaker.cooldown_s)

    async def open(self, name: str, body: dict[str, Any], stream: bool,
                   attempts: list[Attempt], deadline: float | None = None) -> UpstreamResponse:
        """POST ``body`` (its ``model`` replaced by the upstream's id) to ``name``'s chat completions.

        Returns the response with its headers read: with ``stream`` the body is still open (iterate
        ``aiter_raw`` and ``aclose`` it); without, the body has been read. A 429/5xx or connect error (and a
        timeout with ``retry_timeouts``) is retried ``max_retries`` times with backoff, then raises
        :class:`UpstreamFailure`; so does an open circuit (no try at all) and the overall ``deadline``
        (``time.monotonic()`` seconds) running out. Any other status (a 4xx about the request itself) is
        returned to be passed on.
        """
        up = self.cfg.upstreams[name]
        breaker = self.breakers[name]
        if not breaker.allow():
            attempts.append(Attempt(name, None, 0.0, "circuit open"))
            raise UpstreamFailure(name, f"circuit open (retry in {breaker.retry_after():.1f} s)", False, True)
        payload = json.dumps({**body, "model": self.cfg.upstream_model(name)}).encode()
        headers = {"content-type": "application/json", "user-agent": "knnroute"}
        key = up.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        session = self.session(name)
        reason, timed_out, delay = "no attempt", False, 0.0
        try:
            for attempt in range(up.max_retries + 1):
                left = math.inf if deadline is None else deadline - time.monotonic()
                if attempt:
                    if timed_out and not up.retry_timeouts:
                        break
                    if left <= delay:
                        break
                    await asyncio.sleep(delay)
                    left -= delay
                if left <= 0:
                    break
                budget = min(up.timeout_s, left)
                # non-streamed: the budget bounds the whole try; streams: connecting, the head and each wait
                # for data, not the whole answer
                t0 = time.perf_counter()
                delay = up.backoff_s * (2 ** attempt)
                try:
                    resp = await session.post("/chat/completions", payload, headers, stream=stream,
                                              connect_timeout=budget, head_timeout=budget)
                except UpstreamError as e:
                    timed_out = isinstance(e, UpstreamTimeout)
                    reason = f"timeout after {budget:g} s" if timed_out else f"connection failed ({e.kind})"
                    attempts.append(Attempt(name, None, time.perf_counter() - t0, e.kind))
                    self._failed(name, breaker, reason)
                    continue
                if resp.status in RETRY_STATUSES:
                    resp.close()
                    reason, timed_out = f"status {resp.status}", resp.status in (408, 504)
                    attempts.append(Attempt(name, resp.status, time.perf_counter() - t0, reason))
                    self._failed(name, breaker, reason)
                    try:
                        delay = max(delay, min(float(resp.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S))
                    except ValueError:
                        pass
                    continue
                content = None
                if not stream:
                    try:
                        content = await resp.read(max(0.0, budget - (time.perf_counter() - t0)))
                    except UpstreamError as e:
                        resp.close()
                        timed_out = isinstance(e, UpstreamTimeout)
                        reason = (f"timeout after {budget:g} s reading the body" if timed_out
                                  else f"body failed ({e.kind})")
                        attempts.append(Attempt(name, resp.status, time.perf_counter() - t0, e.kind))
                        self._failed(name, breaker, reason)
                        continue
                    except BaseException:  # cancelled: the connection cannot be reused
                        resp.close()
                        raise
                attempts.append(Attempt(name, resp.status, time.perf_counter() - t0))
                breaker.success()
                return UpstreamResponse(resp, content, budget if stream else None)
        except BaseException:  # cancelled (the client left, or the deadline): no outcome for the breaker
            breaker.abandon()
            raise
        if deadline is not None and time.monotonic() >= deadline and reason == "no attempt":
            reason, timed_out = "the request's deadline ran out", True
        breaker.abandon()  # a probe that ended without a try
        raise UpstreamFailure(name, reason, timed_out)


def unresolved(cfg: GatewayConfig, timeout: float = 3.0) -> dict[str, str]:
    """Upstreams whose host does not resolve now: ``{name: reason}`` (looked up in parallel, at most
    ``timeout`` seconds in all). A start-up check: requests to such an upstream would all fail over."""
    hosts: dict[str, tuple[str, int]] = {}
    for name, up in cfg.upstreams.items():
        u = urlsplit(up.base_url)
        hosts[name] = (u.hostname or "", u.port or (443 if u.scheme == "https" else 80))
    out: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=min(8, len(hosts)) or 1)
    futures = {name: pool.submit(socket.getaddrinfo, h, p, type=socket.SOCK_STREAM) for name, (h, p) in hosts.items()}
    deadline = time.monotonic() + timeout
    for name, fut in futures.items():
        try:
            fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except OSError as e:
            out[name] = f"{hosts[name][0]!r} does not resolve ({e.strerror or e})"
        except Exception:  # noqa: BLE001 - a look-up still running after the timeout
            out[name] = f"{hosts[name][0]!r} did not resolve within {timeout:g} s"
    pool.shutdown(wait=False, cancel_futures=True)
    return out
