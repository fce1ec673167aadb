"""ASGI middleware of the service: body size limit, per-client concurrency, admin bearer token, Prometheus
metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "AdminTokenMiddleware",
    "BodyLimitMiddleware",
    "ClientConcurrencyMiddleware",
    "Metrics",
    "MetricsMiddleware",
    "bearer_ok",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes`` (declared or streamed) without passing them on.

    The body is buffered (at most ``max_bytes``) and replayed to the app, so the app never sees a
    partial body. The whole body must arrive within ``read_timeout`` seconds (408 otherwise: a client
    trickling its body cannot hold the request open).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if declared > self.max_bytes:
                    await _send_too_large(send, self.max_bytes)
                    return
        chunks: list[bytes] = []
        total = 0
        more = True
        loop = asyncio.get_running_loop()
        deadline = None if self.read_timeout is None else loop.time() + self.read_timeout
        while more:
            try:
                msg = await asyncio.wait_for(receive(), None if deadline is None else max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await send_json(send, 408, {"detail": f"request body not received within {self.read_timeout} s"},
                                [(b"connection", b"close")])
                return
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await _send_too_large(send, self.max_bytes)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def send_json(send: Send, status: int, payload: dict[str, Any],
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_too_large(send: Send, limit: int) -> None:
    await send_json(send, 413, {"detail": f"request body larger than {limit} bytes"},
                    [(b"connection", b"close")])


def bearer_ok(scope: Scope, token: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (the scheme is case-insensitive,
    RFC 7235; the token is compared in constant time). Always False without a token."""
    if not token:
        return False
    got = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
    scheme, _, value = got.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token.encode())


class ClientConcurrencyMiddleware:
    """Answer 429 to a client (by peer address) that already has ``limit`` requests in flight.

    Behind a proxy every request comes from the proxy's address: limit per client in the proxy instead
    (``docs/security.md``). Counting happens on the event loop, so no lock is needed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"per-client concurrency limit must be >= 1, got {limit}")
        self.app = app
        self.limit = int(limit)
        self.active: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = str(client[0]) if client else "?"
        n = self.active.get(key, 0)
        if n >= self.limit:
            await send_json(send, 429, {"detail": f"too many concurrent requests from this client "
                                                  f"(limit {self.limit})"})
            return
        self.active[key] = n + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.active[key] - 1
            if left:
                self.active[key] = left
            else:
                del self.active[key]


class AdminTokenMiddleware:
    """Guard ``/admin/``: 403 without ``Authorization: Bearer <token>``; with no token configured the
    admin endpoints are off (403 saying how to turn them on), never open."""

    def __init__(self, app: ASGIApp, token: str | None, prefix: str = "/admin/") -> None:
        self.app = app
        self.token = token or None
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            if self.token is None:
                await send_json(send, 403, {"detail": "admin endpoints are off: start the service with "
                                                      "--admin-token (or $KNNROUTE_ADMIN_TOKEN) to use them"})
                return
            if not bearer_ok(scope, self.token):
                await send_json(send, 403, {"detail": "admin token required: Authorization: Bearer <token>"})
                return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Count requests by endpoint and status and time them (Prometheus).

    A request that ends without a response because the client went away (it disconnected before
    sending its whole body, or before the answer) is counted with status ``499`` (nginx's "client
    closed request"), not 500: 500 means the service failed."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status = [0]
        gone = [False]
        t0 = time.perf_counter()

        async def send_wrapper(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            await send(msg)

        async def receive_wrapper() -> Message:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                gone[0] = True
            return msg

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            code = status[0] or (499 if gone[0] else 500)
            m = self.metrics
            m.requests.labels(endpoint, scope.get("method", ""), str(code)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)


class Metrics:
    """The service's Prometheus metrics, in their own registry (one per app).

    ``router``: anything with ``size`` and ``model_names`` (a RouterSlot: read at each scrape).
    """

    def __init__(self, router: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "knnroute_requests", "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "knnroute_request_duration_seconds", "Request latency (server side, seconds)", ["endpoint"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.routed = Counter("knnroute_routed", "Queries routed, by chosen model", ["model"],
                              registry=self.registry)
        self.fallbacks = Counter(
            "knnroute_fallbacks", "Queries sent to the fallback model, by reason", ["reason"],
            registry=self.registry,
        )
        self.queries = Counter("knnroute_queries", "Queries routed, by input kind", ["input"],
                               registry=self.registry)
        size = Gauge("knnroute_support_size", "Labelled prompts in the support set", registry=self.registry)
        size.set_function(lambda: router.size)
        for m in router.model_names:  # expose zeros for every model from the start
            self.routed.labels(m)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
