"""Read timeouts for the service's connections (slowloris): uvicorn has none for request headers.

* :func:`timed_protocol` -- uvicorn's HTTP protocol (httptools, else h11) with a header deadline: a
  connection must deliver a complete request head within ``read_timeout`` seconds of opening (or of
  its previous response); otherwise it is closed. The deadline is not extended by trickling bytes.
* The body has its own deadline in :class:`~knnroute.service.middleware.BodyLimitMiddleware` (408).
* :func:`uvicorn_limits` -- the uvicorn settings the service runs with (keep-alive, header size,
  concurrency).
* ``early`` (httptools only): a refusal decided from the request line alone, answered by the protocol itself
  before any ASGI work exists -- no request task, no scope handed to the app, the body discarded as it
  arrives. Under overload a refusal must cost far less than a served request, or refusing cannot keep the
  served rate up: through the ASGI stack a 503 cost about 0.11 ms of CPU, about a sixth of a routed
  request (docs/security.md).

uvicorn is imported inside the functions (the ``serve`` extra).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_READ_TIMEOUT", "MAX_HEADER_BYTES", "timed_protocol", "uvicorn_limits"]

DEFAULT_READ_TIMEOUT = 10.0
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_SECONDS = 5


Early = Callable[[bytes, bytes], Any]  # a response (bytes), an admission token, or None


class _NoEvent:
    def set(self) -> None:
        return None


class _Answered:
    """Stands for a request the protocol answered itself: uvicorn ignores its body (``response_complete``) and
    finds the attributes it touches when the connection is lost or shut down."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoEvent()


ANSWERED = _Answered()
ADMITTED = "knnroute.admitted"  # in the scope of a request that ``early`` let through


def timed_protocol(read_timeout: float = DEFAULT_READ_TIMEOUT, base: type | None = None,
                   early: Early | None = None) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class that closes connections whose request head is late.

    ``early(method, target)``, when given (and uvicorn's protocol is the httptools one), is asked once a
    request head has arrived: a complete HTTP response (bytes) to answer with at once, or else the request
    goes to the app as usual, its scope carrying ``ADMITTED``: what ``early`` returned (an admission token),
    or True for None."""
    if not read_timeout > 0:
        raise ValueError(f"read timeout must be a positive number of seconds, got {read_timeout!r}")
    if base is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:  # pragma: no cover - httptools is optional in uvicorn
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
    assert base is not None
    if early is not None and not hasattr(base, "on_headers_complete"):
        early = None  # h11: no parser callbacks to hook (the app refuses instead)

    class TimedProtocol(base):  # type: ignore[valid-type,misc]
        _read_timer: asyncio.TimerHandle | None = None
        _deadline = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            # One timer per connection, moved lazily: a request only sets the deadline (a timer made and
            # cancelled per request cost 9% of the CPU of a gateway refusing thousands a second); when the
            # timer fires before the deadline, it sleeps again until then.
            self._deadline = self.loop.time() + read_timeout
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def on_headers_complete(self) -> None:
            cycle: Any = getattr(self, "cycle", None)
            if early is not None and (cycle is None or cycle.response_complete):
                answer = early(self.parser.get_method(), self.url)
                if isinstance(answer, bytes):
                    self.cycle = ANSWERED  # the rest of this request (its body) is read and dropped
                    self.transport.write(answer)
                    if not self.parser.should_keep_alive():
                        self.transport.close()
                        return
                    self.on_response_complete()
                    return
                self.scope[ADMITTED] = True if answer is None else answer
            super().on_headers_complete()

        def _timed_out(self) -> None:
            self._read_timer = None
            left = self._deadline - self.loop.time()
            if left > 0:
                self._read_timer = self.loop.call_later(left, self._timed_out)
                return
            cycle = getattr(self, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                return  # the head arrived and the request is being handled (its body has its own deadline)
            if not self.transport.is_closing():
                self.transport.close()

    TimedProtocol.__name__ = TimedProtocol.__qualname__ = f"Timed{base.__name__}"
    return TimedProtocol


def uvicorn_limits(read_timeout: float = DEFAULT_READ_TIMEOUT, limit_concurrency: int | None = None,
                   early: Early | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: the timed protocol, keep-alive,
    the h11 header size bound and (optionally) a cap on concurrent connections (503 beyond it)."""
    return {
        "http": timed_protocol(read_timeout, early=early),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": limit_concurrency,
    }
