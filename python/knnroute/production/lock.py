"""A reader-writer lock: many readers or one writer, writers not starved."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RWLock"]


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation).

    :class:`~knnroute.production.router.ProductionRouter` uses it to guard the one update that changes
    the number of models (``add_model``) against queries, so that a query's (M,) predictions, its routed
    index and the model-name list it is reported with all belong to the same M. (The core itself is safe
    on its own: its ``predict`` / ``route_one_detail`` check the output width under the core's lock and
    retry; an earlier binding sized outputs outside it, a heap-buffer-overflow found by the ASan run of
    the concurrency stress test and now fixed in C++, see
    tests/test_core.py::test_add_model_concurrent_with_predict.) Row updates (add/remove) do not change
    output sizes and need no Python lock on the query path.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
