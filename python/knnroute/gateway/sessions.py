"""Session affinity: a conversation (same ``user`` field or ``x-session-id`` header) stays on one model
for ``ttl`` seconds after its last request, unless that model fails."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["Sessions"]


class Sessions:
    """Session key -> model, with a time-to-live refreshed on use and a bound on how many are kept."""

    def __init__(self, ttl: float, max_sessions: int = 100_000) -> None:
        self.ttl = float(ttl)
        self.max_sessions = int(max_sessions)
        self._map: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> str | None:
        if key is None or self.ttl <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._map.get(key)
            if hit is None:
                return None
            if now - hit[1] > self.ttl:
                del self._map[key]
                return None
            return hit[0]

    def set(self, key: str | None, model: str) -> None:
        if key is None or self.ttl <= 0:
            return
        with self._lock:
            self._map[key] = (model, time.monotonic())
            self._map.move_to_end(key)
            while len(self._map) > self.max_sessions:
                self._map.popitem(last=False)

    def __len__(self) -> int:
        return len(self._map)
