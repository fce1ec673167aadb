"""The gateway's shared state: one interface, two back-ends (SQLite for one machine, PostgreSQL for many).

A store holds
* ``requests`` -- each answered routed request's context (the routed embedding as float32 bytes, the model
  that answered, its cost in USD, the inbound key's id, the time), for as long as feedback is accepted;
* ``feedback`` -- the append-only feedback records, each with an increasing sequence number the store assigns
  (a refused duplicate may leave a gap; a number is never reused). Writers
  are serialized (SQLite's ``BEGIN IMMEDIATE``; an advisory transaction lock on PostgreSQL), so sequence
  order is commit order and a reader that tails ``seq > last`` never skips a record that commits later;
* ``snapshots`` -- which sequence each router snapshot (the router file) includes;
* ``keys`` -- per inbound key: requests, feedbacks, spend in USD, and requests per minute (limits hold
  across replicas because every replica counts into the same rows).

:meth:`Store.commit` writes a whole batch (request contexts, usage, feedbacks) in ONE durable transaction:
the group commit of :mod:`knnroute.gateway.shared`. Every error a user can cause is a one-line
:class:`StoreError` (a bad URL, an unreachable database, a store made for another embedding size).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Context", "Outcome", "Record", "SQLiteStore", "Store", "StoreError"]


class StoreError(RuntimeError):
    """A store that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Context:
    """An answered request that may get feedback (from any replica)."""

    embedding: np.ndarray  # (d,) float32
    model: str
    cost: float  # USD
    key: str  # the inbound key's id (a hash; never the key)
    time: float


@dataclass(frozen=True)
class Record:
    """One acknowledged feedback, as every replica applies it."""

    seq: int
    request_id: str
    model: str
    score: float
    cost: float
    embedding: np.ndarray
    key: str
    time: float


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted feedback: ``seq`` (stored), or ``error`` ("unknown" / "duplicate")."""

    request_id: str
    seq: int = 0
    model: str = ""
    error: str = ""


SCHEMA = [
    "CREATE TABLE IF NOT EXISTS knnroute_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS knnroute_requests (request_id TEXT PRIMARY KEY, embedding {blob} NOT NULL, "
    "model TEXT NOT NULL, cost {real} NOT NULL, key TEXT NOT NULL, time {real} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS knnroute_requests_time ON knnroute_requests (time)",
    "CREATE TABLE IF NOT EXISTS knnroute_feedback (seq {serial}, request_id TEXT NOT NULL UNIQUE, "
    "model TEXT NOT NULL, score {real} NOT NULL, cost {real} NOT NULL, embedding {blob} NOT NULL, "
    "key TEXT NOT NULL, time {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS knnroute_snapshots (name TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
    "time {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS knnroute_reverts (id {serial}, request_id TEXT NOT NULL, time {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS knnroute_keys (key TEXT PRIMARY KEY, requests BIGINT NOT NULL DEFAULT 0, "
    "feedbacks BIGINT NOT NULL DEFAULT 0, spend {real} NOT NULL DEFAULT 0, minute BIGINT NOT NULL DEFAULT 0, "
    "minute_requests BIGINT NOT NULL DEFAULT 0)",
]


class Store:
    """The interface (and the SQL both back-ends share; ``?`` placeholders, rewritten for PostgreSQL)."""

    url: str
    dim: int
    blob: str = "BLOB"
    real: str = "REAL"
    serial: str = "INTEGER PRIMARY KEY AUTOINCREMENT"

    # ------------------------------------------------------------------ back-end hooks
    def _sql(self, q: str) -> str:
        return q

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:  # a cursor in one serialized, durable transaction
        raise NotImplementedError
        yield

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def snapshot_lock(self) -> contextlib.AbstractContextManager[bool]:
        """Held by one snapshot writer at a time across every replica; yields False when another holds it."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Sleep until new feedback may be there (PostgreSQL: a NOTIFY), at most ``timeout`` seconds."""
        time.sleep(timeout)

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ schema
    def _init_schema(self, cur: Any, dim: int) -> None:
        for q in SCHEMA:
            cur.execute(q.format(blob=self.blob, real=self.real, serial=self.serial))
        cur.execute(self._sql("SELECT v FROM knnroute_meta WHERE k = 'dim'"))
        row = cur.fetchone()
        if row is None:
            cur.execute(self._sql("INSERT INTO knnroute_meta (k, v) VALUES ('dim', ?)"), (str(dim),))
        elif int(row[0]) != dim:
            raise StoreError(f"feedback store {self.url} holds {row[0]}-dimensional embeddings, but the router "
                             f"embeds into {dim}: use a store made for this router")
        self.dim = dim

    # ------------------------------------------------------------------ writes
    def commit(self, requests: Sequence[tuple[str, Context]], feedback: Sequence[tuple[str, float, float]],
               notify: bool = True, direct: Sequence[tuple[str, float]] = ()) -> list[Outcome]:
        """One durable transaction: the request contexts (and each key's usage), the usage of answered
        pass-through requests ``(key, cost)``, then the feedbacks ``(request_id, score, time)`` in order.
        Returns one :class:`Outcome` per feedback."""
        out: list[Outcome] = []
        minute = int(time.time() // 60)
        with self._write() as cur:
            usage: dict[str, list[float]] = {}
            if requests:  # one statement for all of them
                cur.executemany(self._sql("INSERT INTO knnroute_requests (request_id, embedding, model, cost, key, "
                                          "time) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"),
                                [(rid, np.asarray(c.embedding, dtype=np.float32).tobytes(), c.model, float(c.cost),
                                  c.key, float(c.time)) for rid, c in requests])
            for _, c in requests:
                u = usage.setdefault(c.key, [0, 0, 0.0])
                u[0] += 1
                u[2] += float(c.cost)
            for key, cost in direct:
                u = usage.setdefault(key, [0, 0, 0.0])
                u[0] += 1
                u[2] += float(cost)
            seqs: list[tuple[str, int, str]] = []
            for rid, score, t in feedback:  # one statement per feedback; a second only when it is refused
                cur.execute(self._sql("INSERT INTO knnroute_feedback (request_id, model, score, cost, embedding, key, "
                                      "time) SELECT request_id, model, ?, cost, embedding, key, ? FROM "
                                      "knnroute_requests WHERE request_id = ? ON CONFLICT (request_id) DO NOTHING "
                                      "RETURNING seq, model, key"), (float(score), float(t), rid))
                row = cur.fetchone()
                if row is None:
                    cur.execute(self._sql("SELECT 1 FROM knnroute_feedback WHERE request_id = ?"), (rid,))
                    out.append(Outcome(rid, error="duplicate" if cur.fetchone() is not None else "unknown"))
                    continue
                seq = int(row[0])
                out.append(Outcome(rid, seq, row[1]))
                seqs.append((rid, seq, row[1]))
                usage.setdefault(row[2], [0, 0, 0.0])[1] += 1
            for key, (nreq, nfb, spend) in usage.items():
                cur.execute(self._sql(
                    "INSERT INTO knnroute_keys (key, requests, feedbacks, spend, minute, minute_requests) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "requests = knnroute_keys.requests + excluded.requests, "
                    "feedbacks = knnroute_keys.feedbacks + excluded.feedbacks, "
                    "spend = knnroute_keys.spend + excluded.spend, "
                    "minute_requests = CASE WHEN knnroute_keys.minute = excluded.minute "
                    "THEN knnroute_keys.minute_requests + excluded.minute_requests "
                    "ELSE excluded.minute_requests END, minute = excluded.minute"),
                    (key, int(nreq), int(nfb), float(spend), minute, int(nreq)))
            if seqs and notify:
                self._notify(cur)
        return out

    def _notify(self, cur: Any) -> None:
        pass

    def import_records(self, records: Sequence[Record]) -> int:
        """Put an old JSON-lines log's records into an empty store, keeping their sequence numbers."""
        with self._write() as cur:
            cur.execute(self._sql("SELECT COUNT(*) FROM knnroute_feedback"))
            if int(cur.fetchone()[0]):
                raise StoreError(f"feedback store {self.url} already holds feedback: the old log is imported only "
                                 "into an empty store")
            for r in records:
                cur.execute(self._sql("INSERT INTO knnroute_feedback (seq, request_id, model, score, cost, "
                                      "embedding, key, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                            (int(r.seq), r.request_id, r.model, float(r.score), float(r.cost),
                             np.asarray(r.embedding, dtype=np.float32).tobytes(), r.key, float(r.time)))
            self._after_import(cur)
        return len(records)

    def _after_import(self, cur: Any) -> None:
        pass

    def revert(self, key: str | None, since: float, until: float) -> list[str]:
        """Delete the feedback records of one key id (None: any) within a time window (epoch seconds) and
        note their request ids in ``knnroute_reverts`` (every replica removes their rows: :meth:`reverts_after`).
        Their request contexts are deleted, so they cannot be rated again. Returns the reverted request ids."""
        lo = -1e308 if since == -np.inf else float(since)
        hi = 1e308 if until == np.inf else float(until)
        with self._write() as cur:
            # the highest sequence number so far is kept, so a file saved past reverted records still fits
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM knnroute_feedback")
            top = int(cur.fetchone()[0])
            cur.execute(self._sql("INSERT INTO knnroute_meta (k, v) VALUES ('high_seq', ?) ON CONFLICT (k) DO "
                                  "UPDATE SET v = excluded.v"), (str(max(top, self._high_seq(cur))),))
            q = "DELETE FROM knnroute_feedback WHERE time >= ? AND time <= ?"
            args: tuple[Any, ...] = (lo, hi)
            if key is not None:
                q, args = q + " AND key = ?", args + (key,)
            cur.execute(self._sql(q + " RETURNING request_id"), args)
            ids = [str(r[0]) for r in cur.fetchall()]
            now = time.time()
            for rid in ids:  # the context goes too: the request cannot be rated again (404)
                cur.execute(self._sql("INSERT INTO knnroute_reverts (request_id, time) VALUES (?, ?)"), (rid, now))
                cur.execute(self._sql("DELETE FROM knnroute_requests WHERE request_id = ?"), (rid,))
            if ids:
                self._notify(cur)
        return ids

    def reverts_after(self, last: int) -> tuple[int, list[str]]:
        """Reverted request ids noted after ``last`` (an id of knnroute_reverts): (the newest id, the ids)."""
        with self._read() as cur:
            cur.execute(self._sql("SELECT id, request_id FROM knnroute_reverts WHERE id > ? ORDER BY id"), (int(last),))
            rows = cur.fetchall()
        return (int(rows[-1][0]) if rows else int(last)), [str(r[1]) for r in rows]

    def set_snapshot(self, name: str, seq: int) -> None:
        with self._write() as cur:
            cur.execute(self._sql("INSERT INTO knnroute_snapshots (name, seq, time) VALUES (?, ?, ?) "
                                  "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, time = excluded.time"),
                        (name, int(seq), time.time()))

    def prune(self, older_than: float) -> tuple[int, int]:
        """Forget request contexts older than ``older_than`` (epoch seconds), and feedback records that old
        that every recorded snapshot already includes. Returns (requests, feedbacks) removed."""
        with self._write() as cur:
            cur.execute(self._sql("DELETE FROM knnroute_requests WHERE time < ?"), (older_than,))
            nreq = cur.rowcount
            cur.execute("SELECT MIN(seq) FROM knnroute_snapshots")
            row = cur.fetchone()
            nfb = 0
            if row is not None and row[0] is not None:
                cur.execute(self._sql("DELETE FROM knnroute_feedback WHERE time < ? AND seq <= ? AND seq < "
                                      "(SELECT MAX(seq) FROM knnroute_feedback)"),
                            (older_than, int(row[0])))
                nfb = cur.rowcount
        return max(nreq, 0), max(nfb, 0)

    # ------------------------------------------------------------------ reads
    def records_after(self, seq: int, limit: int = 10_000) -> list[Record]:
        with self._read() as cur:
            cur.execute(self._sql("SELECT seq, request_id, model, score, cost, embedding, key, time "
                                  "FROM knnroute_feedback WHERE seq > ? ORDER BY seq LIMIT ?"), (int(seq), int(limit)))
            rows = cur.fetchall()
        return [Record(int(r[0]), r[1], r[2], float(r[3]), float(r[4]),
                       np.frombuffer(bytes(r[5]), dtype=np.float32).copy(), r[6], float(r[7])) for r in rows]

    def context(self, request_id: str) -> Context | None:
        """An answered request's context (None: unknown here, or forgotten)."""
        with self._read() as cur:
            cur.execute(self._sql("SELECT embedding, model, cost, key, time FROM knnroute_requests "
                                  "WHERE request_id = ?"), (request_id,))
            r = cur.fetchone()
        if r is None:
            return None
        return Context(np.frombuffer(bytes(r[0]), dtype=np.float32).copy(), r[1], float(r[2]), r[3], float(r[4]))

    def _high_seq(self, cur: Any) -> int:
        cur.execute("SELECT v FROM knnroute_meta WHERE k = 'high_seq'")
        row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def max_seq(self) -> int:
        """The highest sequence number given (also when a revert deleted its record)."""
        with self._read() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM knnroute_feedback")
            return max(int(cur.fetchone()[0]), self._high_seq(cur))

    def snapshots(self) -> dict[str, int]:
        with self._read() as cur:
            cur.execute("SELECT name, seq FROM knnroute_snapshots")
            return {r[0]: int(r[1]) for r in cur.fetchall()}

    def usage(self) -> dict[str, dict[str, float]]:
        """Per key id: requests, feedbacks, spend (USD), requests this minute."""
        minute = int(time.time() // 60)
        with self._read() as cur:
            cur.execute("SELECT key, requests, feedbacks, spend, minute, minute_requests FROM knnroute_keys")
            return {r[0]: {"requests": int(r[1]), "feedbacks": int(r[2]), "spend": float(r[3]),
                           "minute_requests": int(r[5]) if int(r[4]) == minute else 0} for r in cur.fetchall()}


class SQLiteStore(Store):
    """SQLite in WAL mode: one machine, any number of processes; each commit is fsync-ed (synchronous=FULL)."""

    def __init__(self, path: str | os.PathLike, dim: int, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wconn = self._connect()
            self._rconn = self._connect()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open feedback store {self.url}: {e}") from None
        self._wlock, self._rlock = threading.Lock(), threading.Lock()
        self._lockfile = self.path.with_name(self.path.name + ".snapshot-lock")
        try:
            with self._write() as cur:
                self._init_schema(cur, dim)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"feedback store {self.url}: WAL mode is not available there ({mode})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self._wlock:
            cur = self._wconn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")  # the write lock: sequence order is commit order
            except sqlite3.Error as e:
                raise StoreError(f"feedback store {self.url}: {e}") from None
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._rlock:
            yield self._rconn.cursor()

    @contextlib.contextmanager
    def _snapshot_lock(self) -> Iterator[bool]:
        with open(self._lockfile, "a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def snapshot_lock(self) -> contextlib.AbstractContextManager[bool]:
        return self._snapshot_lock()

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._wconn.close()
            self._rconn.close()
