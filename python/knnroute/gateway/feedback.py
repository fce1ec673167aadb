"""Durable online learning: outcome feedback becomes support rows, and nothing acknowledged is lost.

* :class:`FeedbackLog` -- an append-only JSON-lines file. Each acknowledged feedback is one line
  (``seq``, request id, model, score, cost, the routed prompt's embedding), written and ``fsync``-ed
  before the client gets its 200.
* :class:`FeedbackStore` -- applies feedback to the live :class:`~knnroute.production.ProductionRouter`
  (one row: the routed prompt's embedding, the observed score and cost for the model that answered, NaN
  -- unobserved -- for every other model; the core's aggregation skips NaN cells), re-saves the router
  file atomically on a timer and at shutdown with the last applied ``seq`` in its metadata
  (``meta["feedback_seq"]``), and at start replays the log past that ``seq``. So a ``kill -9`` after N
  acknowledged feedbacks loses none: each is in the log (fsync) and is either in the saved file or
  replayed from the log.
* Answered requests waiting for feedback survive a graceful restart: at shutdown they are written beside
  the log (``<log>.pending.npz``: plain arrays, read back with ``allow_pickle=False`` and checked against
  the router), and every request id in the log is known again at start, so a second feedback for an
  already-rated request is a 409 after a restart too, not a 404.

One process owns the log (a second one is refused: :class:`LogInUse`); several processes or replicas share
a database instead (``[feedback] store``: :mod:`knnroute.gateway.shared`), which imports this log once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.gateway.learning import KeyCap, fold, revert_router, window
from knnroute.production.persist import write_state
from knnroute.production.router import ProductionRouter

__all__ = ["FeedbackLog", "FeedbackStore", "LogInUse", "Pending"]

log = logging.getLogger("knnroute.gateway")


@dataclass(frozen=True)
class Pending:
    """An answered request that may still get feedback."""

    embedding: np.ndarray  # (d,) float32, the routed text's embedding
    model: str  # the model that answered
    cost: float  # USD: from the upstream's usage and the router's prices, else the predicted cost
    key: str = "-"  # the inbound key's id (a hash of it; "-" without auth)


class LogInUse(RuntimeError):
    """A second process opened a JSON-lines feedback log (one line)."""


class FeedbackLog:
    """Append-only JSON lines with fsync; ``records()`` reads it back (a torn last line is skipped)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the process's life
        try:  # one process per file: a second one would write the same sequence numbers and lose feedback
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise LogInUse(f"feedback.log {self.path} is in use by another gateway process: a JSON-lines log "
                           "has one writer; to run several gateways (or --workers N) set [feedback] store = "
                           '"sqlite:///feedback.db" (one machine) or "postgresql://..." (docs/gateway.md)') from None
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        out = []
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    log.warning("feedback log %s: skipped a torn or corrupt line", self.path)
                    continue
                if isinstance(rec, dict) and "seq" in rec:
                    out.append(rec)
        return out

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        """The records of a log, without opening it for writing."""
        log_ = FeedbackLog.__new__(FeedbackLog)
        log_.path = Path(path)
        return log_.records()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the log by these records (atomically: a temporary file, fsync, rename), keeping the lock."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            for rec in records:
                fh.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            new = open(tmp, "ab")  # noqa: SIM115 - replaces the held handle
            fcntl.flock(new.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            old, self._fh = self._fh, new
            old.close()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class FeedbackStore:
    """Pending requests, the durable log, live updates of the router and periodic atomic saves.

    Parameters
    ----------
    router : the live router (updated in place)
    router_file : where it is re-saved (atomically: the old file stays whole until the new one is in place)
    log_path : the feedback log (None: feedback is applied but not durable, and the file is not re-saved)
    pending_max : answered requests remembered for feedback (oldest forgotten first)
    """

    def __init__(self, router: ProductionRouter, router_file: str | os.PathLike | None,
                 log_path: str | os.PathLike | None, pending_max: int = 100_000, key_share_max: float = 1.0,
                 max_rows: int = 0) -> None:
        self.router = router
        self.router_file = None if router_file is None else Path(router_file)
        self.log = None if log_path is None else FeedbackLog(log_path)
        self.pending_max = int(pending_max)
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._done: set[str] = set()
        self._lock = threading.Lock()  # seq, the log order and router rows stay in step
        self.seq = int(router.meta.get("feedback_seq", 0))
        self.saved_seq = self.seq
        self.applied = 0
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        self.keys: dict[str, str] = {}  # request id -> the inbound key id of its feedback
        self.cap = KeyCap(key_share_max, self.key_of)
        self.max_rows, self.folded = int(max_rows), 0  # bounded state (learning.fold)

    def key_of(self, row_id: str) -> str | None:
        """The key id that wrote a router row (None: a fitted row)."""
        return self.keys.get(row_id[3:]) if row_id.startswith("fb-") else None

    # ------------------------------------------------------------------ requests
    def remember(self, request_id: str, pending: Pending) -> None:
        with self._lock:
            self._pending[request_id] = pending
            while len(self._pending) > self.pending_max:
                self._pending.popitem(last=False)

    def account(self, key: str, cost: float) -> None:
        """Per-key usage needs the shared store (knnroute.gateway.shared): nothing to do here."""

    def known(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._pending or request_id in self._done

    # ------------------------------------------------------------------ feedback
    def _row(self, rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names = self.router.model_names
        S = np.full((1, len(names)), np.nan, dtype=np.float32)
        C = np.full((1, len(names)), np.nan, dtype=np.float32)
        j = names.index(rec["model"])
        S[0, j] = float(rec["score"])
        C[0, j] = float(rec["cost"])
        return np.asarray(rec["embedding"], dtype=np.float32)[None, :], S, C

    def submit(self, request_id: str, score: float) -> dict[str, Any]:
        """Log (fsync) and apply one feedback. Raises KeyError (unknown id) or ValueError (already given)."""
        with self._lock:
            p = self._pending.get(request_id)
            if p is None:
                if request_id in self._done:
                    raise ValueError(f"request {request_id!r} already has feedback")
                raise KeyError(request_id)
            self.cap.check(self.router, p.embedding, p.model, p.key)  # KeyCapExceeded: a 429
            rec = {"seq": self.seq + 1, "request_id": request_id, "time": time.time(), "model": p.model,
                   "score": float(score), "cost": float(p.cost), "key": p.key,
                   "embedding": [float(v) for v in p.embedding]}
            if self.log is not None:
                self.log.append(rec)  # durable before it is acknowledged or applied
            self.seq += 1
            X, S, C = self._row(rec)
            self.router.add(X, S, C, ids=[f"fb-{request_id}"], times=[float(self.seq)])
            self.keys[request_id] = p.key
            self.folded += fold(self.router, self.seq - 1, self.seq, self.max_rows)
            del self._pending[request_id]
            self._done.add(request_id)
            self.applied += 1
            return {"request_id": request_id, "model": p.model, "seq": self.seq, "size": self.router.size}

    def replay(self) -> int:
        """Apply the log's records past the saved ``seq`` (at start); returns how many were applied. Every
        request id in the log is remembered as rated (a second feedback for it is a 409)."""
        if self.log is None:
            return 0
        n = 0
        with self._lock:
            for rec in self.log.records():
                if "request_id" in rec:
                    self._done.add(str(rec["request_id"]))
                    self.keys[str(rec["request_id"])] = str(rec.get("key", "-"))
                if int(rec["seq"]) <= self.seq:
                    continue
                if rec.get("model") not in self.router.model_names:
                    log.warning("feedback %s names model %r, not in the router: skipped", rec["seq"],
                                rec.get("model"))
                    self.seq = int(rec["seq"])
                    continue
                X, S, C = self._row(rec)
                rid = str(rec["request_id"])
                self.router.add(X, S, C, ids=[f"fb-{rid}"], times=[float(rec["seq"])])
                self.keys[rid] = str(rec.get("key", "-"))
                self.folded += fold(self.router, self.seq, int(rec["seq"]), self.max_rows)
                self._done.add(rid)
                self.seq = int(rec["seq"])
                n += 1
        return n

    def revert(self, key: str | None = None, since: float | None = None, until: float | None = None
               ) -> dict[str, Any]:
        """Remove the feedback of one key id and/or a time window (epoch seconds) from the log (rewritten
        atomically) and the live router, then re-save the router file. The request ids stay rated (409)."""
        key, lo, hi = window(key, since, until)
        with self._lock:
            if self.log is None:
                raise ValueError("revert needs feedback.log or feedback.store (nothing durable to revert)")
            recs = self.log.records()
            gone = [r for r in recs if "request_id" in r and (key is None or r.get("key", "-") == key)
                    and lo <= float(r.get("time", 0.0)) <= hi]
            drop = {str(r["request_id"]) for r in gone}
            if drop:
                self.log.rewrite([r for r in recs if str(r.get("request_id")) not in drop])
            rows = revert_router(self.router, drop)
            for rid in drop:
                self.keys.pop(rid, None)
        if drop and self.router_file is not None:
            self.saved_seq = -1  # the file holds the reverted rows: save now
            self.save()
        return {"reverted": len(drop), "rows_removed": rows, "size": self.router.size, "seq": self.seq}

    # ------------------------------------------------------------------ pending across restarts
    @property
    def pending_path(self) -> Path | None:
        return None if self.log is None else self.log.path.with_name(self.log.path.name + ".pending.npz")

    def dump_pending(self) -> int:
        """Write the requests still waiting for feedback beside the log (atomically); returns how many."""
        path = self.pending_path
        if path is None:
            return 0
        with self._lock:
            items = list(self._pending.items())
        d = self.router.dim
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, ids=np.asarray([k for k, _ in items], dtype="U"),
                     models=np.asarray([p.model for _, p in items], dtype="U"),
                     costs=np.asarray([p.cost for _, p in items], dtype=np.float64),
                     embeddings=np.asarray([p.embedding for _, p in items], dtype=np.float32).reshape(-1, d))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return len(items)

    def load_pending(self) -> int:
        """Read what :meth:`dump_pending` wrote (at start); a file that does not fit the router is skipped
        with a warning. Returns how many requests may get feedback again."""
        path = self.pending_path
        if path is None or not path.is_file():
            return 0
        try:
            with np.load(path, allow_pickle=False) as z:
                ids, models, costs, emb = z["ids"], z["models"], z["costs"], z["embeddings"]
            n = len(ids)
            if not (len(models) == len(costs) == n and emb.shape == (n, self.router.dim)
                    and ids.dtype.kind == models.dtype.kind == "U"):
                raise ValueError("arrays of different lengths or the wrong dimension")
        except (OSError, ValueError, KeyError) as e:
            log.warning("pending feedback file %s skipped: %s", path, e)
            return 0
        names = set(self.router.model_names)
        k = 0
        with self._lock:
            for i in range(n):
                rid, model, cost = str(ids[i]), str(models[i]), float(costs[i])
                if model not in names or rid in self._done or not np.isfinite(cost):
                    continue
                self._pending[rid] = Pending(np.array(emb[i], dtype=np.float32), model, cost)
                k += 1
            while len(self._pending) > self.pending_max:
                self._pending.popitem(last=False)
        return k

    # ------------------------------------------------------------------ saving
    def save(self) -> bool:
        """Re-save the router file atomically when feedback arrived since the last save."""
        if self.router_file is None or self.log is None:
            return False
        with self._lock:
            if self.seq == self.saved_seq:
                return False
            seq = self.seq
            self.router.meta["feedback_seq"] = seq
            state = self.router.state()
        write_state(state, self.router_file)
        self.saved_seq = seq
        log.info("saved %s (feedback seq %d, %d rows)", self.router_file, seq, len(state["ids"]))
        return True

    def start(self, interval: float) -> None:
        """Save every ``interval`` seconds in a daemon thread."""
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.save()
                except Exception:  # the next tick retries; the log keeps everything meanwhile
                    log.exception("periodic save of %s failed", self.router_file)

        self._saver = threading.Thread(target=loop, name="knnroute-feedback-save", daemon=True)
        self._saver.start()

    def close(self) -> None:
        """Stop the timer, save once more, close the log (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._saver is not None:
            self._saver.join(10)
        try:
            self.save()
            n = self.dump_pending()
            if n:
                log.info("kept %d answered request(s) open for feedback in %s", n, self.pending_path)
        finally:
            if self.log is not None:
                self.log.close()
