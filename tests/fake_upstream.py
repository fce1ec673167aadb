"""Loopback HTTP servers for the gateway's tests and benchmark: a minimal OpenAI chat-completions upstream
(plain and server-sent-event streaming replies, scripted 429s, 5xx and slow replies), and a thread runner."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.servers import free_port, thread_server

__all__ = ["Script", "free_port", "make_upstream", "thread_server"]


class Script:
    """What the next requests get: ``fail`` 500s, ``busy`` 429s, ``delay`` seconds before answering."""

    def __init__(self) -> None:
        self.fail = 0
        self.busy = 0
        self.delay = 0.0
        self.stream_delay = 0.0
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.stream_closed = 0
        self.stream_pad = 0  # bytes of padding per streamed event (a large stream fills socket buffers)
        self.stream_events = 0  # extra padded events before the answer
        self.inflight = 0  # requests being answered now (a cancelled request leaves this count)
        self.started = 0
        self.cancelled = 0  # delayed requests whose caller closed the connection before the answer


def make_upstream(name: str, script: Script | None = None) -> tuple[FastAPI, Script]:
    """A chat-completions server whose answers say ``name`` (its content is ``"answer from <name>"``)."""
    sc = script or Script()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        sc.started += 1
        sc.inflight += 1
        try:
            return await answer(request)
        finally:
            sc.inflight -= 1

    async def answer(request: Request) -> Any:
        body = await request.json()
        sc.bodies.append(body)
        sc.auth.append(request.headers.get("authorization"))
        if sc.busy > 0:
            sc.busy -= 1
            return JSONResponse({"error": {"message": "rate limited"}}, status_code=429,
                                headers={"retry-after": "0"})
        if sc.fail > 0:
            sc.fail -= 1
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if sc.delay:  # wait, watching the caller: a gateway that gives up closes the connection
            end = time.monotonic() + sc.delay
            while time.monotonic() < end:
                if await request.is_disconnected():
                    sc.cancelled += 1
                    return JSONResponse({}, status_code=499)
                await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
        text = f"answer from {name}"
        base = {"id": "chatcmpl-1", "created": int(time.time()), "model": body.get("model")}
        if body.get("stream"):
            async def events() -> Any:
                try:
                    for _ in range(sc.stream_events):
                        yield f": {'x' * sc.stream_pad}\n\n"  # an SSE comment line, ignored by clients
                    for i, word in enumerate(text.split()):
                        delta = {"content": (" " if i else "") + word}
                        if i == 0:
                            delta["role"] = "assistant"
                        chunk = {**base, "object": "chat.completion.chunk",
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                        yield f"data: {json.dumps(chunk)}\n\n"
                        if sc.stream_delay:
                            await asyncio.sleep(sc.stream_delay)
                    end = {**base, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    yield f"data: {json.dumps(end)}\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    sc.stream_closed += 1

            return StreamingResponse(events(), media_type="text/event-stream")
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}

    return app, sc
