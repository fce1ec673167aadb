"""The gateway's own responses: an upstream's non-200 body passed on as it came, and an upstream's stream
passed through with the client side bounded (a client that stops reading is cut off, one that leaves ends
it; either way the upstream request is closed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse, Response

from knnroute.gateway.upstream import UpstreamResponse

__all__ = ["RawResponse", "StreamResponse", "disconnected"]


async def disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    """Return when the client has gone (call only once the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class RawResponse(JSONResponse):
    """An upstream's non-200 body passed on as it came."""

    def __init__(self, content: bytes, status: int, media_type: str, headers: dict[str, str]) -> None:
        super().__init__(None, status_code=status, headers=headers)
        self.body = content
        self.headers["content-length"] = str(len(content))
        self.headers["content-type"] = media_type


class StreamResponse(Response):
    """An upstream's server-sent events passed through, bounded on the client side.

    Each chunk must be taken by the client within ``write_timeout`` seconds (a client that stops reading
    fills the socket buffers, then the send waits): past that the stream ends and the connection is closed.
    A client that disconnects ends it at once. Either way the upstream request is closed (cancelled)."""

    def __init__(self, resp: UpstreamResponse, headers: dict[str, str], write_timeout: float,
                 done: Callable[[str], None]) -> None:
        super().__init__(None, status_code=resp.status_code, headers=headers,
                         media_type=resp.headers.get("content-type", "text/event-stream"))
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # chunked
        self.upstream, self.write_timeout, self.done = resp, float(write_timeout), done

    async def _pump(self, send: Any) -> str:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunks: AsyncIterator[bytes] = self.upstream.aiter_raw()
        try:
            async for chunk in chunks:
                try:
                    await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": True}),
                                           self.write_timeout)
                except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
                    return "stalled"
        except Exception:  # the upstream broke mid-stream
            return "upstream broke"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "ok"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(disconnected(receive))
        outcome = "interrupted"
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                outcome = pump.result()
        finally:
            for t in (pump, gone):
                t.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
            await self.upstream.aclose(complete=outcome == "ok")
            self.done(outcome)
        # a stalled stream returns without completing the response: uvicorn then closes the connection
