"""A minimal chat-completions upstream for load tests: one canned answer, written by an asyncio protocol
(no framework), so that at thousands of requests per second the upstream costs its core little and the load
measures the gateway. Keep-alive HTTP/1.1; every POST gets the same 200 JSON body. Loopback only.

    python -m bench.canned_upstream PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

BODY = json.dumps({"id": "chatcmpl-canned", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()
            + b"\r\n\r\n" + BODY)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            n = 0
            i = head.find(b"content-length:")
            if i >= 0:
                n = int(head[i + 15:].split(b"\r\n", 1)[0])
            if len(self.buf) < end + 4 + n:
                return
            self.buf = self.buf[end + 4 + n:]
            self.t.write(HEALTH if head.startswith(b"get ") else RESPONSE)  # type: ignore[attr-defined]


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:  # pragma: no cover
        asyncio.run(main(int(sys.argv[1])))
