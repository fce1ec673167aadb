"""Inbound auth: ``Authorization: Bearer <key>`` against the configured keys (constant-time compare).

``/health`` is open; ``/metrics`` and ``/admin/...`` need the admin key (when it is unset: an API
key); everything else needs an API key or the admin key (when keys are set; with none, auth is off).
Keys are never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence

from knnroute.service.middleware import ASGIApp, Receive, Scope, Send

__all__ = ["GatewayAuthMiddleware", "refusal"]

OPEN_PATHS = frozenset({"/health"})
ADMIN_PREFIXES = ("/metrics", "/admin/")


def _matches(got: bytes, keys: Sequence[bytes]) -> bool:
    """``got`` (an Authorization header) carries one of ``keys``; the scheme is case-insensitive (RFC 7235)."""
    scheme, _, value = got.strip().partition(b" ")
    token = b"Bearer " + value.strip() if scheme.lower() == b"bearer" else b""
    ok = False
    for k in keys:  # compare against every key: the time does not say which one matched
        ok |= hmac.compare_digest(token, k)
    return ok


def _body(what: str) -> bytes:
    return json.dumps({"error": {"message": f"missing or wrong key: send Authorization: Bearer <key> with {what}",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()


_API_BODY = _body("an API key")


def refusal(scope: Scope, need: Sequence[bytes]) -> bytes | None:
    """The 401 body when ``scope`` carries none of the keys ``need`` (``b"Bearer <key>"``), else None."""
    got = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
    return None if _matches(got, need) else _API_BODY


class GatewayAuthMiddleware:
    def __init__(self, app: ASGIApp, api_keys: Sequence[str], admin_key: str | None) -> None:
        self.app = app
        self.api = [f"Bearer {k}".encode() for k in api_keys]
        self.admin = [] if admin_key is None else [f"Bearer {admin_key}".encode()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path not in OPEN_PATHS:
            got = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
            admin = path.startswith(ADMIN_PREFIXES)
            # admin paths take the admin key; without one set, they fall back to the API keys
            need = self.admin if admin and self.admin else self.api + self.admin
            if need and not _matches(got, need):
                body = _body("the admin key") if admin and self.admin else _API_BODY
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
