"""The gateway's hot path in one ASGI layer: ``POST /v1/chat/completions`` and ``POST /v1/feedback``.

Through the general stack (FastAPI's own layers, then admission, error reshaping, auth, metrics, body limit,
admin guard, routing, the endpoint) a chat request crossed about fifteen ASGI layers and their wrappers:
about half of the gateway's CPU per request on the routed path (issue 28 profiled 2.0-2.4 ms of CPU per
routed request at 200 req/s). :class:`FastPath` sits outermost in the app's middleware stack and does for
those two paths, in order, what those layers did -- nothing more:

1. admission (:class:`~knnroute.gateway.admission.Admission`, chat only): 503 with ``Retry-After`` before
   anything is read;
2. auth (:func:`~knnroute.gateway.auth.refusal`): 401;
3. metrics: ``knnroute_requests`` / ``knnroute_request_duration_seconds`` by path and status (499 when the
   client left without an answer);
4. the per-client concurrency cap (429), when set;
5. the body: at most ``max_body_bytes`` (413, declared or streamed; a bad ``Content-Length`` is a 400),
   within ``read_timeout`` seconds (408);
6. the handler, raced against the client leaving (its work is cancelled: 499) and the request's deadline
   (504); a :class:`~knnroute.gateway.errors.GatewayError` is its OpenAI-shaped error, anything else a
   one-line 500 (the trace goes to the log only).

Every other path and method goes through the general stack unchanged. Step 1 runs earlier still when the
gateway serves through :func:`knnroute.service.timeouts.timed_protocol` (``knnroute gateway``):
:func:`early_refusal` answers a refused chat request from its request line, before uvicorn starts any ASGI
work for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response

from knnroute.gateway.admission import Admission, Ticket
from knnroute.gateway.auth import refusal
from knnroute.gateway.errors import SUPPORTED, GatewayError, error
from knnroute.gateway.responses import disconnected
from knnroute.service.middleware import ASGIApp, Metrics, Receive, Scope, Send
from knnroute.service.timeouts import ADMITTED, Early

__all__ = ["FastPath", "Handler", "early_refusal"]

log = logging.getLogger("knnroute.gateway")

Handler = Callable[[bytes, Scope], Awaitable[Response]]
GONE = 499  # nginx's "client closed request": what a request whose client left is counted as
CHAT = "/v1/chat/completions"


def _json(status: int, message: str, code: str | None = None, close: bool = False) -> Response:
    resp = error(status, message, code=code)
    if close:
        resp.headers["connection"] = "close"
    return resp


class _Gone(Exception):
    """The client disconnected before its body arrived."""


class FastPath:
    """See the module docstring. ``handlers``: path -> ``handler(body, scope)``."""

    def __init__(self, app: ASGIApp, handlers: Mapping[str, Handler], *, admission: Admission | None,
                 api_keys: list[bytes], admin_keys: list[bytes], metrics: Metrics, max_body_bytes: int,
                 read_timeout: float | None, deadline_s: float, client_limit: int | None = None) -> None:
        self.app, self.handlers, self.admission = app, dict(handlers), admission
        self.need = api_keys + admin_keys  # chat and feedback take an API key or the admin key
        self.metrics, self.max_body, self.read_timeout = metrics, int(max_body_bytes), read_timeout
        self.deadline_s, self.client_limit = float(deadline_s), client_limit
        self.active: dict[str, int] = {}
        # path -> status -> the metric child (labels() once)
        self._req: dict[str, dict[int, Any]] = {p: {} for p in self.handlers}
        self._lat = {p: metrics.latency.labels(p) for p in self.handlers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if scope.get("method") != "POST":
            msg = f"Method Not Allowed for {path!r}; this gateway serves {SUPPORTED}"
            await _send(send, 405, _error_body(msg, "invalid_request_error"), [(b"allow", b"POST")])
            return
        if path != CHAT or self.admission is None:
            await self._admitted(handler, path, scope, receive, send)
            return
        ticket = scope.get(ADMITTED)
        if not isinstance(ticket, Ticket):  # else the HTTP protocol has asked already (:func:`early_refusal`)
            got = self.admission.admit_one()
            if isinstance(got, bytes):
                await _send(send, 503, got, [(b"retry-after", b"1")])
                return
            scope[ADMITTED] = ticket = got
        counted = self.admission.state
        counted.inflight += 1
        try:
            await self._admitted(handler, path, scope, receive, send)
        finally:
            counted.inflight -= 1
            ticket.done()

    async def _admitted(self, handler: Handler, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if self.need:
            denied = refusal(scope, self.need)
            if denied is not None:
                await _send(send, 401, denied, [(b"www-authenticate", b"Bearer")])
                return
        await self._measured(handler, path, scope, receive, send)

    async def _measured(self, handler: Handler, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        status = 500  # unless it answers, or the client leaves (499)
        try:
            status = await self._serve(handler, scope, receive, send)
        finally:
            child = self._req[path].get(status)
            if child is None:
                child = self._req[path][status] = self.metrics.requests.labels(path, "POST", str(status))
            child.inc()
            self._lat[path].observe(time.perf_counter() - t0)

    async def _serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> int:
        client = scope.get("client")
        who = str(client[0]) if client else "?"
        if self.client_limit is not None:
            n = self.active.get(who, 0)
            if n >= self.client_limit:
                return await _respond(_json(429, f"too many concurrent requests from this client (limit "
                                                 f"{self.client_limit})"), scope, receive, send)
            self.active[who] = n + 1
        try:
            try:
                raw = await self._body(scope, receive)
            except GatewayError as e:
                return await _respond(_json(e.status, e.message, e.code, close=True), scope, receive, send)
            except _Gone:
                return GONE
            return await self._run(handler, raw, scope, receive, send)
        finally:
            if self.client_limit is not None:
                left = self.active[who] - 1
                if left:
                    self.active[who] = left
                else:
                    del self.active[who]

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise GatewayError(400, "invalid Content-Length header") from None
                if declared > self.max_body:
                    raise GatewayError(413, f"request body larger than {self.max_body} bytes")
        msg = await receive()  # the common case: the whole body in one message
        if msg["type"] == "http.disconnect":
            raise _Gone
        body = msg.get("body", b"")
        if not msg.get("more_body", False):
            if len(body) > self.max_body:
                raise GatewayError(413, f"request body larger than {self.max_body} bytes")
            return bytes(body)
        chunks, total = [body], len(body)
        loop = asyncio.get_running_loop()
        deadline = None if self.read_timeout is None else loop.time() + self.read_timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), None if deadline is None else max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise GatewayError(408, f"request body not received within {self.read_timeout} s") from None
            if msg["type"] == "http.disconnect":
                raise _Gone
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise GatewayError(413, f"request body larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def _run(self, handler: Handler, raw: bytes, scope: Scope, receive: Receive, send: Send) -> int:
        """``handler(raw)`` until it answers, the client leaves (cancelled: 499) or the deadline (504)."""
        task = asyncio.ensure_future(handler(raw, scope))
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait((task, gone), timeout=self.deadline_s + 1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        resp: Response
        if not task.done():  # the client left, or the deadline passed while routing
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if gone.done() and not gone.cancelled():
                return GONE
            resp = error(504, f"the request's deadline of {self.deadline_s:g} s ran out")
        else:
            try:
                resp = task.result()
            except GatewayError as e:
                resp = e.response()
            except Exception as e:
                log.exception("%s failed", scope.get("path"))
                resp = error(500, f"gateway error: {type(e).__name__} (see the gateway log)", "server_error")
        return await _respond(resp, scope, receive, send)


async def _respond(resp: Response, scope: Scope, receive: Receive, send: Send) -> int:
    await resp(scope, receive, send)
    return int(resp.status_code)


def early_refusal(admission: Admission) -> Early:
    """For the HTTP protocol (:func:`knnroute.service.timeouts.timed_protocol`): a chat request that admission
    refuses is answered 503 from its request line, before any ASGI work (a few tens of microseconds); an
    admitted one gets its :class:`~knnroute.gateway.admission.Ticket` there, so requests admitted in one
    loop iteration are counted before any of them runs."""

    def early(method: bytes, target: bytes) -> bytes | Ticket | None:
        if method != b"POST" or target != _CHAT_TARGET:
            return None
        got = admission.admit_one()
        if not isinstance(got, bytes):
            return got  # admitted: the ticket rides in the request's scope
        return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(got)).encode() + b"\r\nretry-after: 1\r\n\r\n" + got)

    return early


_CHAT_TARGET = CHAT.encode()


def _error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


async def _send(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})

