"""A circuit breaker per upstream: after ``failures`` consecutive failed tries the upstream is skipped for
``cooldown_s`` seconds (open), then one request probes it (half-open): a success closes the circuit, a
failure opens it again. A failing or hanging upstream then costs routed requests nothing while it is open,
instead of its timeout and retries on every request. All state changes happen on the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker"]

CLOSED, OPEN, HALF_OPEN = 0, 1, 2  # also the values of the knnroute_gateway_circuit_state gauge


class Breaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] | None = None) -> None:
        self.failures, self.cooldown_s = int(failures), float(cooldown_s)
        self._now = clock or time.monotonic
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self.opened = 0  # times the circuit opened

    def allow(self) -> bool:
        """Whether a try may go out now (in half-open: only the one probe)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._now() - self.opened_at < self.cooldown_s:
                return False
            self.state = HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self._now() - self.opened_at))

    def success(self) -> None:
        self.state, self.consecutive, self.probing = CLOSED, 0, False

    def failure(self) -> bool:
        """Count a failed try; True when this one opened the circuit."""
        self.consecutive += 1
        opened = False
        if self.state == HALF_OPEN or self.consecutive >= self.failures:
            if self.state != OPEN:
                self.opened += 1
                opened = True
            self.state, self.opened_at, self.probing = OPEN, self._now(), False
        return opened

    def abandon(self) -> None:
        """A try that ended without an outcome (the client left): the next request may probe."""
        self.probing = False
