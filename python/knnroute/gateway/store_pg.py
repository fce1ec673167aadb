"""The PostgreSQL back-end of :class:`knnroute.gateway.store.Store`: replicas on many machines.

Writers take an advisory transaction lock first, so sequence numbers commit in order (a tailer reading
``seq > last`` never skips one); each commit that adds feedback sends ``NOTIFY knnroute_feedback`` and
:meth:`PostgresStore.wait` wakes on it, so replicas apply new feedback within milliseconds. The snapshot
writer holds another advisory lock for as long as it writes the router file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from knnroute.gateway.store import Store, StoreError

__all__ = ["PostgresStore"]

WRITE_LOCK, SNAPSHOT_LOCK, SCHEMA_LOCK = 0x6B6E6E01, 0x6B6E6E02, 0x6B6E6E03  # advisory lock keys
CHANNEL = "knnroute_feedback"


class PostgresStore(Store):
    blob = "BYTEA"
    real = "DOUBLE PRECISION"
    serial = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str, dim: int, password_env: str | None = None) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("feedback.store is a postgresql:// URL but psycopg is not installed: "
                             "pip install 'knnroute[postgres]'") from None
        self._psycopg = psycopg
        parts = urlsplit(url)
        self.url = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        kwargs: dict[str, Any] = {"connect_timeout": 10, "application_name": "knnroute-gateway"}
        if password_env:
            pw = os.environ.get(password_env)
            if pw is None:
                raise StoreError(f"feedback.password_env: ${password_env} is unset (the store's password)")
            kwargs["password"] = pw
        self._dsn, self._kwargs = url, kwargs
        self._lconn: Any = None
        self._rconn: Any = None
        self._wlock, self._rlock, self._llock = threading.Lock(), threading.Lock(), threading.Lock()
        self._wconn = self._connect()
        try:
            self._rconn = self._connect(autocommit=True)
            with self._write() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # replicas start at once
                self._init_schema(cur, dim)
        except BaseException:
            self.close()
            raise

    def _connect(self, autocommit: bool = False) -> Any:
        try:
            return self._psycopg.connect(self._dsn, autocommit=autocommit, **self._kwargs)
        except self._psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreError(f"cannot reach feedback store {self.url}: {first}") from None

    def _sql(self, q: str) -> str:
        return q.replace("?", "%s")

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self._wlock:
            if self._wconn.closed:
                self._wconn = self._connect()
            try:
                with self._wconn.transaction(), self._wconn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    yield cur
            except self._psycopg.OperationalError as e:
                raise StoreError(f"feedback store {self.url}: {str(e).strip().splitlines()[0]}") from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._rlock:
            if self._rconn.closed:
                self._rconn = self._connect(autocommit=True)
            try:
                with self._rconn.cursor() as cur:
                    yield cur
            except self._psycopg.OperationalError as e:
                raise StoreError(f"feedback store {self.url}: {str(e).strip().splitlines()[0]}") from None

    def _notify(self, cur: Any) -> None:
        cur.execute(f"NOTIFY {CHANNEL}")

    def _after_import(self, cur: Any) -> None:  # the sequence continues past the imported numbers
        cur.execute("SELECT setval(pg_get_serial_sequence('knnroute_feedback', 'seq'), "
                    "GREATEST((SELECT COALESCE(MAX(seq), 0) FROM knnroute_feedback), 1))")

    @contextlib.contextmanager
    def _snapshot_lock(self) -> Iterator[bool]:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (SNAPSHOT_LOCK,))
                yield bool(cur.fetchone()[0])
        finally:
            conn.close()

    def snapshot_lock(self) -> contextlib.AbstractContextManager[bool]:
        return self._snapshot_lock()

    def wait(self, timeout: float) -> None:
        with self._llock:
            if self._lconn is None or self._lconn.closed:
                self._lconn = self._connect(autocommit=True)
                self._lconn.execute(f"LISTEN {CHANNEL}")
            conn = self._lconn
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                break
        except self._psycopg.Error:
            with self._llock:
                self._lconn = None

    def close(self) -> None:
        with self._wlock, self._rlock, self._llock:
            for c in (self._wconn, self._rconn, self._lconn):
                if c is not None:
                    c.close()
