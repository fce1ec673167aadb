"""Per inbound key accounting and limits, counted in the shared store so they hold across replicas.

Every replica counts its answered routed requests (and their spend: usage x the router's prices) into the
store's per-key rows with the request contexts (group commit). :class:`KeyLimits` reads every key's totals
from the store at most every ``refresh_s`` seconds and adds what this replica answered since, so a key
over ``limits.requests_per_minute`` or ``limits.spend_usd`` gets a 429 on every replica (the sum is what
counts). Keys are identified by a hash (:func:`key_id`): the key itself is never stored.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from knnroute.gateway.config import LimitsConfig
from knnroute.gateway.store import Store

__all__ = ["KeyCollector", "KeyLimits", "key_id"]


def key_id(authorization: str | None) -> str:
    """A short, stable id for the key in an ``Authorization`` header ("-" without one)."""
    if not authorization:
        return "-"
    _, _, value = authorization.strip().partition(" ")
    return hashlib.sha256(value.strip().encode()).hexdigest()[:16]


class KeyLimits:
    def __init__(self, store: Store, cfg: LimitsConfig, refresh_s: float = 0.2) -> None:
        self.store, self.cfg, self.refresh_s = store, cfg, refresh_s
        self._usage: dict[str, dict[str, float]] = {}
        self._local: dict[str, list[float]] = {}  # since the last refresh: requests, spend
        self._at = 0.0
        self._minute = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.cfg.requests_per_minute is not None or self.cfg.spend_usd is not None

    def usage(self) -> dict[str, dict[str, float]]:
        """Every key's totals (at most ``refresh_s`` old)."""
        now = time.monotonic()
        if now - self._at >= self.refresh_s:
            fresh = self.store.usage()
            with self._lock:
                self._usage, self._local, self._at = fresh, {}, now
                self._minute = int(time.time() // 60)
        return self._usage

    def count(self, key: str, cost: float) -> None:
        with self._lock:
            loc = self._local.setdefault(key, [0.0, 0.0])
            loc[0] += 1
            loc[1] += cost

    def check(self, key: str) -> str | None:
        """Why ``key`` is over a limit (None: it is not)."""
        if not self.active:
            return None
        u = self.usage().get(key, {})
        with self._lock:
            loc = list(self._local.get(key, [0.0, 0.0]))
        lim = self.cfg
        minute_req = (u.get("minute_requests", 0) if self._minute == int(time.time() // 60) else 0) + loc[0]
        if lim.requests_per_minute is not None and minute_req >= lim.requests_per_minute:
            return (f"this API key is over its limit of {lim.requests_per_minute} requests per minute (summed over "
                    "every gateway replica): retry in the next minute")
        spend = u.get("spend", 0.0) + loc[1]
        if lim.spend_usd is not None and spend >= lim.spend_usd:
            return f"this API key has spent ${spend:.4f} of its ${lim.spend_usd:g} limit: ask for a higher limit"
        return None


class KeyCollector:
    """Per inbound key (its hash id): requests, feedbacks and spend, from the shared store (every replica)."""

    def __init__(self, limits: KeyLimits) -> None:
        self.limits = limits

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        fams = {f: GaugeMetricFamily(f"knnroute_gateway_key_{f}", f"Per inbound key (hash id), every replica: {f}",
                                     labels=["key"]) for f in ("requests", "feedbacks", "spend_usd")}
        try:
            usage = self.limits.usage()
        except Exception:  # noqa: BLE001 - the store is unreachable: /metrics still answers
            usage = {}
        for key, u in usage.items():
            fams["requests"].add_metric([key], u["requests"])
            fams["feedbacks"].add_metric([key], u["feedbacks"])
            fams["spend_usd"].add_metric([key], u["spend"])
        yield from fams.values()
