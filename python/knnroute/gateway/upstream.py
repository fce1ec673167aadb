"""Forwarding to OpenAI-compatible upstreams: one pooled ``aiohttp.ClientSession``, bounded retries with
exponential backoff on connect errors, timeouts, 429 and 5xx, and a clear failure when they run out (the
caller then tries the next model). Upstream keys come from environment variables and are only ever put in
the outgoing ``Authorization`` header.

aiohttp, not httpx: under 64 concurrent requests httpx's pool (httpcore 1.0) probed every idle connection's
socket on each request, about a third of the gateway's CPU in a py-spy profile (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from knnroute.gateway.config import GatewayConfig

__all__ = ["Attempt", "UpstreamFailure", "UpstreamResponse", "Upstreams"]

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

    def __init__(self, model: str, reason: str, timeout: bool) -> None:
        super().__init__(f"{model}: {reason}")
        self.model, self.reason, self.timeout = model, reason, timeout


class UpstreamResponse:
    """An upstream's answer: status and headers; ``content`` (read) or ``aiter_raw`` (streaming)."""

    def __init__(self, resp: aiohttp.ClientResponse, content: bytes | None) -> None:
        self._resp = resp
        self.status_code = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}
        self.content = content if content is not None else b""

    def json(self) -> Any:
        return json.loads(self.content)

    async def aiter_raw(self) -> Any:
        async for chunk in self._resp.content.iter_any():
            yield chunk

    async def aclose(self, complete: bool = True) -> None:
        """Release the connection (``complete``) or close it, which cancels an unfinished upstream request."""
        if complete:
            self._resp.release()
        else:
            self._resp.close()


@dataclass
class Upstreams:
    """The configured upstreams and the shared HTTP session (created on first use, in the serving loop)."""

    cfg: GatewayConfig
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.cfg.upstreams)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30),
                auto_decompress=False,  # bytes pass through as the upstream sent them
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self, name: str, body: dict[str, Any], stream: bool,
                   attempts: list[Attempt]) -> UpstreamResponse:
        """POST ``body`` (its ``model`` replaced by the upstream's id) to ``name``'s chat completions.

        Returns the response with its headers read: with ``stream`` the body is still open (iterate
        ``aiter_raw`` and ``aclose`` it); without, the body has been read. A 429/5xx, connect error or
        timeout is retried ``max_retries`` times with backoff, then raises :class:`UpstreamFailure`. Any
        other status (a 4xx about the request itself) is returned to be passed on.
        """
        up = self.cfg.upstreams[name]
        url = up.base_url.rstrip("/") + "/chat/completions"
        payload = json.dumps({**body, "model": self.cfg.upstream_model(name)}).encode()
        headers = {"content-type": "application/json"}
        key = up.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        # streams: the timeout bounds connecting and each wait for data, not the whole answer
        timeout = (aiohttp.ClientTimeout(sock_connect=up.timeout_s, sock_read=up.timeout_s) if stream
                   else aiohttp.ClientTimeout(total=up.timeout_s))
        session = self.session()
        reason, timed_out, delay = "no attempt", False, 0.0
        for attempt in range(up.max_retries + 1):
            if attempt:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            delay = up.backoff_s * (2 ** attempt)
            try:
                resp = await session.post(url, data=payload, headers=headers, timeout=timeout)
            except TimeoutError:
                reason, timed_out = f"timeout after {up.timeout_s:g} s", True
                attempts.append(Attempt(name, None, time.perf_counter() - t0, "timeout"))
                continue
            except aiohttp.ClientError as e:
                reason, timed_out = f"connection failed ({type(e).__name__})", False
                attempts.append(Attempt(name, None, time.perf_counter() - t0, type(e).__name__))
                continue
            if resp.status in RETRY_STATUSES:
                resp.release()
                reason, timed_out = f"status {resp.status}", resp.status in (408, 504)
                attempts.append(Attempt(name, resp.status, time.perf_counter() - t0, reason))
                try:
                    delay = max(delay, min(float(resp.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S))
                except ValueError:
                    pass
                continue
            content = None
            if not stream:
                try:
                    content = await resp.read()
                except TimeoutError:
                    resp.close()
                    reason, timed_out = f"timeout after {up.timeout_s:g} s reading the body", True
                    attempts.append(Attempt(name, resp.status, time.perf_counter() - t0, "timeout"))
                    continue
                except aiohttp.ClientError as e:
                    resp.close()
                    reason, timed_out = f"body failed ({type(e).__name__})", False
                    attempts.append(Attempt(name, resp.status, time.perf_counter() - t0, type(e).__name__))
                    continue
                resp.release()
            attempts.append(Attempt(name, resp.status, time.perf_counter() - t0))
            return UpstreamResponse(resp, content)
        raise UpstreamFailure(name, reason, timed_out)
