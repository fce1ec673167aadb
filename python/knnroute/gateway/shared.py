"""Online learning over a shared store (:mod:`knnroute.gateway.store`): any number of replicas converge.

* Each answered routed request's context goes to the store (batched, off the request's path), so feedback
  for it is accepted by any replica; one that arrives before the answering replica's batch is committed
  waits for it up to ``feedback.unknown_wait_s``.
* Group commit (:class:`Committer`): one thread per process writes everything queued -- request contexts,
  usage, feedbacks -- in one durable transaction; every feedback of the batch gets its 200 only after it.
* Every replica tails the store (``seq > applied``; woken by NOTIFY on PostgreSQL, polled on SQLite) and
  applies the records in sequence order, so all replicas hold the same rows in the same order.
* Snapshots: the router file is re-saved with the sequence it includes (``meta["feedback_seq"]``) by one
  writer at a time (the store's advisory lock); a (re)started replica loads it and replays past it only.
  Records older than ``retention_s`` that every snapshot includes are pruned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from knnroute.gateway.feedback import Pending
from knnroute.gateway.learning import KeyCap, fold, revert_router, window
from knnroute.gateway.store import Context, Outcome, Record, SQLiteStore, Store, StoreError
from knnroute.gateway.store_pg import PostgresStore
from knnroute.production.persist import write_state
from knnroute.production.router import ProductionRouter

__all__ = ["Committer", "SharedFeedbackStore", "open_store"]

log = logging.getLogger("knnroute.gateway")


class Committer:
    """Group commit: concurrent writes share one durable transaction (``group=False``: one feedback each)."""

    def __init__(self, store: Store, group: bool = True, max_batch: int = 1024, context_wait_s: float = 0.02) -> None:
        self.store = store
        self.max_feedback = max_batch if group else 1
        # request contexts alone wait this long for company (a feedback is committed at once, contexts with
        # it): at 200 routed requests/s one commit per request was a fifth of the gateway's CPU
        self.max_batch, self.context_wait_s = max_batch, context_wait_s
        self._requests: list[tuple[str, Context]] = []
        self._direct: list[tuple[str, float]] = []
        self._feedback: list[tuple[tuple[str, float, float], Future[Outcome]]] = []
        self._cv = threading.Condition()
        self._stop = False
        self.commits = 0
        self.committed_feedback = 0
        self._thread = threading.Thread(target=self._loop, name="knnroute-group-commit", daemon=True)
        self._thread.start()

    def put_request(self, rid: str, ctx: Context) -> None:
        with self._cv:
            self._requests.append((rid, ctx))
            if len(self._requests) == 1 or len(self._requests) >= self.max_batch:
                self._cv.notify()

    def put_direct(self, key: str, cost: float) -> None:
        with self._cv:
            self._direct.append((key, cost))
            if len(self._direct) == 1:
                self._cv.notify()

    def submit(self, rid: str, score: float) -> Future[Outcome]:
        fut: Future[Outcome] = Future()
        with self._cv:
            if self._stop:
                raise RuntimeError("the feedback store is closed")
            self._feedback.append(((rid, float(score), time.time()), fut))
            self._cv.notify()
        return fut

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._requests or self._feedback or self._direct or self._stop):
                    self._cv.wait()
                until = time.monotonic() + self.context_wait_s
                while not (self._feedback or self._stop) and len(self._requests) < self.max_batch:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if self._stop and not (self._requests or self._feedback or self._direct):
                    return
                reqs, self._requests = self._requests, []
                direct, self._direct = self._direct, []
                fbs, self._feedback = self._feedback[:self.max_feedback], self._feedback[self.max_feedback:]
            try:
                outs = self.store.commit(reqs, [f for f, _ in fbs], direct=direct)
            except Exception as e:  # noqa: BLE001 - each waiting feedback gets the error (a 500)
                log.error("feedback store commit failed (%d request contexts, %d feedbacks): %s", len(reqs),
                          len(fbs), e)
                for _, fut in fbs:
                    fut.set_exception(e)
                continue
            self.commits += 1
            self.committed_feedback += sum(1 for o in outs if o.seq)
            for (_, fut), out in zip(fbs, outs, strict=True):
                fut.set_result(out)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(30)


class SharedFeedbackStore:
    """The feedback store of a replica (the same methods as :class:`~knnroute.gateway.feedback.FeedbackStore`)."""

    log = None  # no JSON-lines log

    def __init__(self, router: ProductionRouter, router_file: str | os.PathLike | None, store: Store, *,
                 group_commit: bool = True, retention_s: float = 7 * 86400.0, poll_s: float = 0.2,
                 unknown_wait_s: float = 1.0, key_share_max: float = 1.0,
                 max_rows: int = 0) -> None:
        self.router = router
        self.router_file = None if router_file is None else Path(router_file)
        self.store = store
        self.committer = Committer(store, group_commit)
        self.retention_s, self.poll_s, self.unknown_wait_s = retention_s, poll_s, unknown_wait_s
        self.seq = int(router.meta.get("feedback_seq", 0))  # the last record applied to the router
        self.saved_seq = self.seq
        self.applied = 0
        self.snapshot_name = f"{socket.gethostname()}:{self.router_file}"
        self._lock = threading.Lock()  # applying records (sequence order)
        self._stop = threading.Event()
        self._tailer: threading.Thread | None = None
        self.keys: dict[str, str] = {}  # request id -> the inbound key id of its feedback (rows applied here)
        self.cap = KeyCap(key_share_max, self.key_of)
        self.reverts_seen = 0  # the last knnroute_reverts id applied
        self.max_rows, self.folded = int(max_rows), 0  # bounded state (learning.fold)
        top = store.max_seq()
        if self.seq > top:
            raise ValueError(f"the router file includes feedback up to seq {self.seq}, but feedback store "
                             f"{store.url} ends at {top}: it is not this router's store")

    # ------------------------------------------------------------------ requests and feedback
    def remember(self, request_id: str, pending: Pending) -> None:
        self.committer.put_request(request_id, Context(pending.embedding, pending.model, pending.cost,
                                                       pending.key, time.time()))

    def account(self, key: str, cost: float) -> None:
        """Count an answered pass-through request (no feedback for it) in its key's usage."""
        self.committer.put_direct(key, cost)

    def submit(self, request_id: str, score: float) -> dict[str, Any]:
        """Store one feedback durably (group commit), then apply everything up to it. Raises KeyError
        (unknown id, after waiting ``unknown_wait_s`` for another replica's batch) or ValueError (rated)."""
        if self.cap.share < 1.0:  # the per-key cap reads the request's context (its key, the prompt)
            ctx, until = self.store.context(request_id), time.monotonic() + self.unknown_wait_s
            while ctx is None and time.monotonic() < until:  # the answering replica's batch may be on its way
                time.sleep(0.01)
                ctx = self.store.context(request_id)
            if ctx is not None:
                self.cap.check(self.router, ctx.embedding, ctx.model, ctx.key)
        deadline = time.monotonic() + self.unknown_wait_s
        delay = 0.01
        while True:
            out = self.committer.submit(request_id, score).result()
            if out.error == "duplicate":
                raise ValueError(f"request {request_id!r} already has feedback")
            if out.error != "unknown":
                break
            if time.monotonic() + delay > deadline:
                raise KeyError(request_id)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        self.catch_up(out.seq)
        return {"request_id": request_id, "model": out.model, "seq": out.seq, "size": self.router.size}

    def _apply(self, recs: list[Record]) -> int:
        """Add the records' rows in one call (one core update for the batch); returns how many."""
        names = self.router.model_names
        ok = [r for r in recs if r.model in names and r.embedding.shape == (self.router.dim,)]
        for r in recs:
            if r not in ok:
                log.warning("feedback %d names model %r, not in the router: skipped", r.seq, r.model)
        if not ok:
            return 0
        S = np.full((len(ok), len(names)), np.nan, dtype=np.float32)
        C = np.full((len(ok), len(names)), np.nan, dtype=np.float32)
        for i, r in enumerate(ok):
            j = names.index(r.model)
            S[i, j], C[i, j] = r.score, r.cost
        X = np.stack([r.embedding for r in ok])
        self.router.add(X, S, C, ids=[f"fb-{r.request_id}" for r in ok], times=[float(r.seq) for r in ok])
        for r in ok:
            self.keys[r.request_id] = r.key
        return len(ok)

    def key_of(self, row_id: str) -> str | None:
        """The key id that wrote a router row (None: a fitted row)."""
        return self.keys.get(row_id[3:]) if row_id.startswith("fb-") else None

    def apply_reverts(self) -> int:
        """Remove the rows of feedback reverted (by any replica or the CLI) since the last call."""
        with self._lock:
            last, ids = self.store.reverts_after(self.reverts_seen)
            n = revert_router(self.router, ids) if ids else 0
            for rid in ids:
                self.keys.pop(rid, None)
            self.reverts_seen = last
        if n:
            log.info("removed %d reverted feedback row(s)", n)
        return n

    def revert(self, key: str | None = None, since: float | None = None, until: float | None = None
               ) -> dict[str, Any]:
        """Delete one key id's and/or a time window's feedback from the store and this router (every
        replica follows), then re-save the router file."""
        key, lo, hi = window(key, since, until)
        ids = self.store.revert(key, lo, hi)
        rows = self.apply_reverts()
        if ids:
            with self._lock:
                self.saved_seq = -1  # the file may hold the reverted rows: save now
            self.save()
        return {"reverted": len(ids), "rows_removed": rows, "size": self.router.size, "seq": self.seq}

    def catch_up(self, until: int | None = None) -> int:
        """Apply the store's records past the last applied one, in sequence order; returns how many."""
        n = 0
        with self._lock:
            while until is None or self.seq < until:
                recs = self.store.records_after(self.seq)
                if not recs:
                    break
                n += self._apply(recs)
                self.folded += fold(self.router, self.seq, recs[-1].seq, self.max_rows)
                self.seq = recs[-1].seq
                if len(recs) < 10_000:
                    break
            self.applied += n
        return n

    def replay(self) -> int:
        n = self.catch_up()
        self.apply_reverts()  # reverted after the router file was saved
        return n

    def dump_pending(self) -> int:  # the request contexts are in the store
        return 0

    def load_pending(self) -> int:
        return 0

    # ------------------------------------------------------------------ snapshots
    def save(self) -> bool:
        """Re-save the router file when it lacks applied feedback: one writer at a time (advisory lock)."""
        if self.router_file is None:
            return False
        with self.store.snapshot_lock() as mine:
            if not mine:
                return False
            with self._lock:
                if self.seq == self.saved_seq:
                    return False
                seq = self.seq
                self.router.meta["feedback_seq"] = seq
                state = self.router.state()
            write_state(state, self.router_file)
            self.store.set_snapshot(self.snapshot_name, seq)
        self.saved_seq = seq
        log.info("saved %s (feedback seq %d, %d rows)", self.router_file, seq, len(state["ids"]))
        return True

    def start(self, interval: float) -> None:
        """Tail the store (and save every ``interval`` s, prune past the retention) in a daemon thread."""
        def loop() -> None:
            next_save = time.monotonic() + interval
            while not self._stop.is_set():
                try:
                    self.store.wait(self.poll_s)
                    if self._stop.is_set():
                        break
                    self.catch_up()
                    self.apply_reverts()
                    if time.monotonic() >= next_save:
                        next_save = time.monotonic() + interval
                        self.save()
                        self.store.prune(time.time() - self.retention_s)
                except Exception as e:  # noqa: BLE001 - the next tick retries
                    log.warning("feedback store %s: %s", self.store.url, e)
                    self._stop.wait(1.0)

        self._tailer = threading.Thread(target=loop, name="knnroute-feedback-tail", daemon=True)
        self._tailer.start()

    def close(self) -> None:
        """Flush the queued writes, stop tailing, save once more, close the store (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.committer.close()
        if self._tailer is not None:
            self._tailer.join(10)
        try:
            self.catch_up()
            self.save()
        except StoreError as e:  # the file keeps what it had; a restart replays the rest from the store
            log.warning("at shutdown: %s", e)
        finally:
            self.store.close()


def open_store(url: str, dim: int, password_env: str | None = None, base: Path | None = None) -> Store:
    """A store from its URL: ``sqlite:///path.db`` (relative to ``base``) or ``postgresql://user@host/db``
    (the password from ``$password_env``)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        raw = url[len("sqlite://"):]
        if not raw.startswith("/") or raw == "/":
            raise StoreError(f"feedback.store {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        p = Path(raw[1:])
        if not p.is_absolute() and base is not None:
            p = base / p
        return SQLiteStore(p, dim, url)
    if parts.scheme in ("postgresql", "postgres"):
        return PostgresStore(url, dim, password_env)
    raise StoreError(f"feedback.store {url!r}: the URL must start with sqlite:/// or postgresql://")
