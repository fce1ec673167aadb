"""The gateway's hot path (knnroute/gateway/fastpath.py) and the refusal from the HTTP protocol
(knnroute/service/timeouts.py ``early``): the same answers as the general stack gave, with real clients
against real processes and a uvicorn server in a thread.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")
pytest.importorskip("wordllama")

from tests.test_gateway import ADMIN, KEY, QUESTIONS, router_file  # noqa: F401, E402 - a fixture
from tests.test_gateway_security import (  # noqa: F401, E402 - fixtures
    AUTH,
    as_process,
    chat_body,
    in_thread,
    router_copy,
    upstreams,
    write_cfg,
)


def _error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return dict(body["error"])


def _recv_responses(sock: socket.socket, n: int, timeout: float = 20.0) -> list[tuple[int, bytes, bytes]]:
    """Read ``n`` HTTP/1.1 responses (content-length bodies) from ``sock``: (status, head, body)."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            got = sock.recv(65536)
            assert got, f"connection closed after {len(out)} responses"
            buf += got
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(buf) < length:
            got = sock.recv(65536)
            assert got, "connection closed mid-body"
            buf += got
        out.append((int(head.split(b" ", 2)[1]), head, buf[:length]))
        buf = buf[length:]
    return out


def test_refused_from_the_request_line_keeps_the_connection(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                                            tmp_path: Path) -> None:
    """With the loop-lag threshold far below any real lag, every chat request is refused by the protocol:
    OpenAI-shaped 503 with Retry-After, its body read and dropped, so the same keep-alive connection (and
    requests pipelined behind it) go on working; the refusals are counted; other paths are untouched."""
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"],
                    server="max_loop_lag_ms = 0.000001")
    with as_process(cfg, tmp_path / "gw.log") as (_, url):
        # the lag measurement starts with the first chat request: let it run
        httpx.post(url + "/v1/chat/completions", content=chat_body("warm up"), headers=AUTH, timeout=10)
        time.sleep(0.3)
        port = int(url.rsplit(":", 1)[1])
        body = chat_body(QUESTIONS[0])
        post = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body)
        health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(post)  # head and body in one write
            cut = post.index(b"\r\n\r\n") + 9  # then one whose head comes first, its body later, and
            s.sendall(post[:cut])  # a GET pipelined behind it
            time.sleep(0.1)
            s.sendall(post[cut:] + health)
            got = _recv_responses(s, 3)
        assert [g[0] for g in got] == [503, 503, 200]
        for status, head, raw in got[:2]:
            assert b"retry-after: 1" in head.lower()
            assert b"date:" not in head.lower()  # uvicorn dates every ASGI answer: this one came from the protocol
            err = httpx.Response(status, content=raw).json()["error"]
            assert err["code"] == "overloaded" and err["type"] == "server_busy"
        assert b'"status"' in got[2][2]  # /health's own answer: the dropped bodies did not leak into it
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            r = c.post("/v1/chat/completions", content=body)
            assert r.status_code == 503 and _error(r)["code"] == "overloaded"
            assert c.post("/route", json={"prompt": QUESTIONS[0]}).status_code == 200  # not a chat request
            metrics = c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        want = 'knnroute_gateway_rejected_total{reason="overloaded"}'
        line = next(x for x in metrics.splitlines() if x.startswith(want))
        assert float(line.split()[-1]) >= 3


def test_http10_refusal_closes(router_file: Path, upstreams: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """An HTTP/1.0 request (no keep-alive) refused by the protocol gets its 503, then the connection closes."""
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"],
                    server="max_loop_lag_ms = 0.000001")
    with as_process(cfg, tmp_path / "gw.log") as (_, url):
        httpx.post(url + "/v1/chat/completions", content=chat_body("warm up"), headers=AUTH, timeout=10)
        time.sleep(0.3)
        body = chat_body(QUESTIONS[1])
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
            s.settimeout(10)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 503") and b'"overloaded"' in data
        # a keep-alive client that leaves after a refusal, too
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
            assert s.recv(65536).startswith(b"HTTP/1.1 503")
        assert httpx.get(url + "/health", timeout=10).status_code == 200  # the loop has seen both closes
    # uvicorn's connection_lost touches the cycle of a connection's last request: the stand-in for one the
    # protocol answered must have what it touches (an AttributeError traceback per such connection before)
    assert "Traceback" not in (tmp_path / "gw.log").read_text()


def test_fast_path_answers_like_the_stack(router_file: Path, upstreams: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """Method, auth, body size (declared and streamed), bad Content-Length, slow body: OpenAI-shaped errors;
    the request metrics carry the path and status."""
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"],
                    server="max_body_bytes = 4096\nread_timeout_s = 1.0")
    with in_thread(cfg) as (url, gw), httpx.Client(base_url=url, timeout=20) as c:
        r = c.get("/v1/chat/completions", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and "/v1/chat/completions" in _error(r)["message"]
        r = c.post("/v1/chat/completions", content=chat_body(QUESTIONS[0]))
        assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
        r = c.post("/v1/feedback", content=b'{"request_id": "x", "score": 1}',
                   headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = c.post("/v1/chat/completions", content=b"x" * 5000, headers=AUTH)
        assert r.status_code == 413 and "larger than 4096" in _error(r)["message"]

        def streamed() -> Any:  # chunked: no declared length
            for _ in range(10):
                yield b"y" * 1000

        r = c.post("/v1/chat/completions", content=streamed(), headers=AUTH)
        assert r.status_code == 413
        r = c.post("/v1/chat/completions", content=chat_body(QUESTIONS[0]), headers=AUTH)
        assert r.status_code == 200 and r.headers["x-knnroute-model"]
        rid = r.headers["x-knnroute-request-id"]
        r = c.post("/v1/feedback", json={"request_id": rid, "score": 1.0}, headers=AUTH)
        assert r.status_code == 200 and r.json()["status"] == "applied"
        metrics = c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text

    for want in ('knnroute_requests_total{endpoint="/v1/chat/completions",method="POST",status="200"} 1.0',
                 'knnroute_requests_total{endpoint="/v1/chat/completions",method="POST",status="413"} 2.0',
                 'knnroute_requests_total{endpoint="/v1/feedback",method="POST",status="200"} 1.0'):
        assert want in metrics, want
    assert gw.inflight == 0 and gw.waiting == 0


def test_slow_body_is_408(router_file: Path, upstreams: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"], server="read_timeout_s = 1.0")
    with in_thread(cfg) as (url, _):
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n"
                      b"authorization: Bearer " + KEY.encode() + b"\r\n\r\n{")  # 1 of 100 bytes, then nothing
            status, _, raw = _recv_responses(s, 1)[0]
        assert status == 408 and "not received within" in httpx.Response(status, content=raw).json()["error"]["message"]


def test_inline_routing_matches_the_batcher(router_file: Path, upstreams: dict[str, Any],  # noqa: F811
                                            tmp_path: Path) -> None:
    """Short texts are routed on the loop with the static embedder (measured at start), long ones and a
    forced ``route_inline_chars = 0`` through the batcher: the same models for the same prompts."""
    prompts = QUESTIONS * 3
    chosen = {}
    for inline in (True, False):
        cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"],
                        # a generous bound: a busy test machine must not turn the static embedder away
                        server="route_inline_max_ms = 20" if inline else "route_inline_chars = 0")
        with in_thread(cfg) as (url, gw), httpx.Client(base_url=url, headers=AUTH, timeout=20) as c:
            assert (gw.inline_chars > 0) == inline
            chosen[inline] = [c.post("/v1/chat/completions", content=chat_body(p)).headers["x-knnroute-model"]
                              for p in prompts]
            assert (gw.batcher.items == 0) == inline
    assert chosen[True] == chosen[False]


def test_no_admission_ticket_leaks(router_file: Path, upstreams: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """With room for one admitted, not yet routed request, requests that end before routing (401, 400, 413,
    a client gone before its body, uvicorn's own 503 at ``limit_concurrency``) each give their admission
    ticket back: the next request is still admitted, and the route-queue gauge returns to 0."""
    cfg = write_cfg(tmp_path, router_copy(router_file, tmp_path), upstreams["urls"],
                    server="max_route_queue = 1\nlimit_concurrency = 2\nmax_body_bytes = 4096")
    with as_process(cfg, tmp_path / "gw.log") as (_, url):
        port = int(url.rsplit(":", 1)[1])
        chat = url + "/v1/chat/completions"
        with httpx.Client(timeout=10) as c:
            assert c.post(chat, content=chat_body("hi"), headers=AUTH).status_code == 200
            assert c.post(chat, content=chat_body("hi")).status_code == 401
            assert c.post(chat, content=b"{not json", headers=AUTH).status_code == 400
            assert c.post(chat, content=b"x" * 5000, headers=AUTH).status_code == 413
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # gone before its body
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            time.sleep(0.2)  # both connections made: the next request is over limit_concurrency
            body = chat_body("hi")
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + KEY.encode()
                      + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            s.settimeout(10)
            assert s.recv(65536).startswith(b"HTTP/1.1 503")  # uvicorn's answer: the app never saw it
            idle.sendall(b"")
        time.sleep(0.3)
        with httpx.Client(timeout=10) as c:
            for i in range(3):  # still admitted: no ticket was lost on the way
                r = c.post(chat, content=chat_body(f"question {i}"), headers=AUTH)
                assert r.status_code == 200, r.text
            metrics = c.get(url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        assert "knnroute_gateway_route_queue 0.0" in metrics
        assert "knnroute_gateway_inflight 0.0" in metrics
