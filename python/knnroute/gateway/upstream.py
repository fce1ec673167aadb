"""Forwarding to OpenAI-compatible upstreams: one pooled ``httpx.AsyncClient``, bounded retries with
exponential backoff on connect errors, timeouts, 429 and 5xx, and a clear failure when they run out (the
caller then tries the next model). Upstream keys come from environment variables and are only ever put in
the outgoing ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from knnroute.gateway.config import GatewayConfig

__all__ = ["Attempt", "UpstreamFailure", "Upstreams"]

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


@dataclass
class Upstreams:
    """The configured upstreams and the shared HTTP client (created on first use, in the serving loop)."""

    cfg: GatewayConfig
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.cfg.upstreams)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def open(self, name: str, body: dict[str, Any], stream: bool,
                   attempts: list[Attempt]) -> httpx.Response:
        """POST ``body`` (its ``model`` replaced by the upstream's id) to ``name``'s chat completions.

        Returns the response with its headers read: with ``stream`` the body is still open (iterate
        ``aiter_raw`` and ``aclose`` it); without, the body has been read. A 429/5xx, connect error or
        timeout is retried ``max_retries`` times with backoff, then raises :class:`UpstreamFailure`. Any
        other status (a 4xx about the request itself) is returned to be passed on.
        """
        up = self.cfg.upstreams[name]
        url = up.base_url.rstrip("/") + "/chat/completions"
        payload = {**body, "model": self.cfg.upstream_model(name)}
        headers = {"content-type": "application/json"}
        key = up.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        client = self.client()
        reason, timed_out, delay = "no attempt", False, 0.0
        for attempt in range(up.max_retries + 1):
            if attempt:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            delay = up.backoff_s * (2 ** attempt)
            try:
                req = client.build_request("POST", url, json=payload, headers=headers,
                                           timeout=httpx.Timeout(up.timeout_s))
                resp = await client.send(req, stream=True)
            except httpx.TimeoutException:
                reason, timed_out = f"timeout after {up.timeout_s:g} s", True
                attempts.append(Attempt(name, None, time.perf_counter() - t0, "timeout"))
                continue
            except httpx.HTTPError as e:
                reason, timed_out = f"connection failed ({type(e).__name__})", False
                attempts.append(Attempt(name, None, time.perf_counter() - t0, type(e).__name__))
                continue
            if resp.status_code in RETRY_STATUSES:
                await resp.aclose()
                reason, timed_out = f"status {resp.status_code}", resp.status_code in (408, 504)
                attempts.append(Attempt(name, resp.status_code, time.perf_counter() - t0, reason))
                try:
                    delay = max(delay, min(float(resp.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S))
                except ValueError:
                    pass
                continue
            if not stream:
                try:
                    await resp.aread()
                except httpx.TimeoutException:
                    reason, timed_out = f"timeout after {up.timeout_s:g} s reading the body", True
                    attempts.append(Attempt(name, resp.status_code, time.perf_counter() - t0, "timeout"))
                    continue
                except httpx.HTTPError as e:
                    reason, timed_out = f"body failed ({type(e).__name__})", False
                    attempts.append(Attempt(name, resp.status_code, time.perf_counter() - t0,
                                            type(e).__name__))
                    continue
                finally:
                    await resp.aclose()
            attempts.append(Attempt(name, resp.status_code, time.perf_counter() - t0))
            return resp
        raise UpstreamFailure(name, reason, timed_out)
