"""OpenAI-shaped errors for the gateway, and the checks of what a client sends (validation in one place).

Every refusal is ``{"error": {"message", "type", "param", "code"}}`` with one short line, never a stack
trace: :class:`GatewayError` raised by the handlers, :func:`error` built directly, and
:class:`OpenAIErrorMiddleware`, which reshapes the ``{"detail": ...}`` errors of the shared service middleware
(413 body too large, 408 body too slow, 429 per-client cap) and of the framework (404 unknown path, 405) on
every path but ``/route`` and ``/route/batch`` (those keep the ``knnroute serve`` shape they document).

The checks bound their input before any work: JSON nesting (RecursionError is a 400, not a 500), numbers
(finite, not booleans, not 400-digit integers: ``float(10**400)`` raises OverflowError, which is not a
ValueError), request ids (at most :data:`MAX_REQUEST_ID` characters, never echoed beyond that).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

from knnroute.service.middleware import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_REQUEST_ID", "GatewayError", "OpenAIErrorMiddleware", "error", "finite", "parse_json",
           "request_id"]

MAX_REQUEST_ID = 128
_KINDS = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          408: "timeout", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_busy", 504: "timeout"}
_SERVICE_PATHS = ("/route", "/route/batch")
SUPPORTED = ("POST /v1/chat/completions, POST /v1/feedback, GET /v1/models, POST /route, POST /route/batch, "
             "GET /health, GET /metrics")


class GatewayError(Exception):
    """A request the gateway refuses: status, one-line message, OpenAI error type/param/code, headers."""

    def __init__(self, status: int, message: str, kind: str | None = None, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.kind = kind or _KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.code, self.param, self.headers = code, param, headers

    def response(self) -> JSONResponse:
        return error(self.status, self.message, self.kind, self.code, self.headers, self.param)


def error(status: int, message: str, kind: str | None = None, code: str | None = None,
          headers: dict[str, str] | None = None, param: str | None = None) -> JSONResponse:
    kind = kind or _KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def parse_json(raw: bytes, what: str) -> Any:
    """``raw`` parsed; a 400 naming ``what`` for bad JSON, bad UTF-8 or nesting too deep to parse."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise GatewayError(400, f"the body is nested too deeply: send {what}") from None
    except UnicodeDecodeError:
        raise GatewayError(400, f"the body is not UTF-8: send {what}") from None
    except ValueError as e:  # JSONDecodeError, and ints over Python's digit limit
        raise GatewayError(400, f"the body is not valid JSON ({str(e)[:120]}): send {what}") from None


def finite(value: Any, name: str, lo: float = 0.0, hi: float = math.inf) -> float | None:
    """``value`` as a finite float in [lo, hi] (None stays None); a 422 naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewayError(422, f"'{name}' must be a number, got {type(value).__name__}", param=name)
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v) or not lo <= v <= hi:
        rng = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        shown = "a number too large for a float" if isinstance(value, int) and v == math.inf else f"{v!r}"
        raise GatewayError(422, f"'{name}' must be a finite number {rng}, got {shown}", param=name)
    return v


def request_id(value: Any) -> str:
    """A feedback's ``request_id``: a string of at most :data:`MAX_REQUEST_ID` characters."""
    if not isinstance(value, str):
        raise GatewayError(422, "'request_id' must be a string (the x-knnroute-request-id of a routed answer)",
                           param="request_id")
    if len(value) > MAX_REQUEST_ID:
        raise GatewayError(422, f"'request_id' has {len(value)} characters; ids have at most {MAX_REQUEST_ID}",
                           param="request_id")
    return value


class OpenAIErrorMiddleware:
    """Reshape ``{"detail": ...}`` error bodies (status >= 400) into the OpenAI error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in _SERVICE_PATHS:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def reshape(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                if int(msg["status"]) >= 400 and any(k == b"content-type" and b"json" in v
                                                     for k, v in msg.get("headers", [])):
                    held.append(msg)
                    return
                await send(msg)
                return
            if held and msg["type"] == "http.response.body":
                held.append(msg)
                if msg.get("more_body", False):
                    return
                start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
                held.clear()
                status = int(start["status"])
                new = _reshaped(body, status, scope.get("path", ""))
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                headers.append((b"content-length", str(len(new)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": new})
                return
            await send(msg)

        await self.app(scope, receive, reshape)


def _reshaped(body: bytes, status: int, path: str) -> bytes:
    try:
        obj = json.loads(body)
    except ValueError:
        return body
    if not isinstance(obj, dict) or "detail" not in obj or "error" in obj:
        return body
    detail = obj["detail"]
    if isinstance(detail, list):  # pydantic errors of a framework route: the first one, in one line
        first = detail[0] if detail and isinstance(detail[0], dict) else {}
        loc = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        msg = f"{loc}: {first.get('msg', 'invalid request')}" if loc else str(first.get("msg", detail))
    else:
        msg = str(detail)
    code = None
    if status == 404:
        msg, code = f"{path[:200]!r} is not served here; this gateway serves {SUPPORTED}", "not_found"
    elif status == 405:
        msg = f"{msg} for {path[:200]!r}; this gateway serves {SUPPORTED}"
    kind = _KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return json.dumps({"error": {"message": msg[:2000], "type": kind, "param": None, "code": code}}).encode()
