"""The gateway's shared feedback store (knnroute.gateway.store): the same tests on SQLite and on a real
PostgreSQL server (tests/pg.py). No mocks: two store objects on one URL are two replicas."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from knnroute.gateway.shared import Committer, open_store
from knnroute.gateway.store import Context, Record, Store, StoreError

D = 8


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store's URL on each back-end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback.db"
    from tests.pg import create_database

    return create_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def stores(store_url: str) -> Iterator[list[Store]]:
    """Two replicas' connections to one store."""
    out = [open_store(store_url, D), open_store(store_url, D)]
    yield out
    for s in out:
        s.close()


def ctx(i: int, model: str = "m1", key: str = "k1", cost: float = 0.01) -> Context:
    return Context(np.full(D, i, dtype=np.float32), model, cost, key, time.time())


def test_commit_assigns_sequences_and_any_replica_accepts(stores: list[Store]) -> None:
    a, b = stores
    a.commit([("r1", ctx(1)), ("r2", ctx(2, "m2"))], [])
    out = b.commit([], [("r1", 0.5, time.time()), ("r1", 0.1, time.time()), ("nope", 1.0, time.time())])
    assert [o.error for o in out] == ["", "duplicate", "unknown"]
    assert out[0].seq == 1 and out[0].model == "m1"
    out = a.commit([], [("r2", 1.0, time.time())])
    assert out[0].seq > 1 and out[0].model == "m2"  # (a refused duplicate may leave a gap: never a reuse)
    recs = b.records_after(0)
    assert [r.seq for r in recs] == [1, out[0].seq] and [r.request_id for r in recs] == ["r1", "r2"]
    assert recs[0].embedding.dtype == np.float32 and np.array_equal(recs[0].embedding, np.full(D, 1.0))
    assert recs[0].score == 0.5 and recs[0].cost == pytest.approx(0.01) and recs[0].key == "k1"
    assert a.records_after(1)[0].request_id == "r2" and a.max_seq() == out[0].seq
    u = a.usage()["k1"]
    assert u["requests"] == 2 and u["feedbacks"] == 2 and u["spend"] == pytest.approx(0.02)


def test_concurrent_writers_never_skip_a_sequence(stores: list[Store]) -> None:
    """Replicas write at once while a third connection tails ``seq > last``: the tailer sees every
    acknowledged feedback exactly once, in sequence order (writes are serialized by the store)."""
    a, b = stores
    n_per = 60
    acked: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def writer(st: Store, w: int) -> None:
        for i in range(n_per):
            rid = f"w{w}-{i}"
            out = st.commit([(rid, ctx(i))], [(rid, 0.5, time.time())])
            with lock:
                acked.append(out[0].seq)

    seen: list[int] = []

    def tail() -> None:
        last = 0
        while not done.is_set() or last < max(acked, default=0):
            for r in a.records_after(last):
                seen.append(r.seq)
                last = r.seq
            time.sleep(0.001)

    t = threading.Thread(target=tail)
    t.start()
    ws = [threading.Thread(target=writer, args=(st, w)) for w, st in enumerate([a, b, a, b])]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    done.set()
    t.join(30)
    assert len(acked) == 4 * n_per and sorted(acked) == seen and len(set(seen)) == len(seen)


def test_group_commit_shares_one_transaction(stores: list[Store]) -> None:
    a, _ = stores
    a.commit([(f"r{i}", ctx(i)) for i in range(200)], [])
    com = Committer(a, group=True)
    try:
        futs = [com.submit(f"r{i}", 0.5) for i in range(200)]
        outs = [f.result(30) for f in futs]
    finally:
        com.close()
    assert sorted(o.seq for o in outs) == list(range(1, 201))
    assert com.commits < 200  # queued feedbacks were committed together
    single = Committer(a, group=False)
    try:
        futs = [single.submit(f"r{i}", 0.5) for i in range(5)]
        assert all(f.result(30).error == "duplicate" for f in futs)
    finally:
        single.close()
    assert single.commits == 5


def test_snapshot_lock_is_exclusive(stores: list[Store]) -> None:
    a, b = stores
    with a.snapshot_lock() as mine:
        assert mine
        with b.snapshot_lock() as theirs:
            assert not theirs
    with b.snapshot_lock() as theirs:
        assert theirs
    a.set_snapshot("host:/r.knnr", 3)
    b.set_snapshot("host:/r.knnr", 5)
    assert a.snapshots() == {"host:/r.knnr": 5}


def test_prune_keeps_what_a_snapshot_lacks(stores: list[Store]) -> None:
    a, _ = stores
    a.commit([(f"r{i}", ctx(i)) for i in range(6)], [(f"r{i}", 1.0, time.time()) for i in range(6)])
    later = time.time() + 10
    assert a.prune(later) == (6, 0)  # no snapshot yet: every feedback record is kept
    a.set_snapshot("s", 3)
    assert a.prune(later) == (0, 3)
    assert [r.seq for r in a.records_after(0)] == [4, 5, 6]
    a.set_snapshot("s", 6)
    a.prune(later)
    assert a.max_seq() == 6  # the last record stays: the sequence never goes back


def test_import_keeps_sequence_numbers(stores: list[Store]) -> None:
    a, b = stores
    recs = [Record(i, f"old{i}", "m1", 0.5, 0.01, np.full(D, i, dtype=np.float32), "-", 1.0) for i in (1, 2, 5)]
    assert a.import_records(recs) == 3
    assert [r.seq for r in b.records_after(0)] == [1, 2, 5]
    b.commit([("new", ctx(9))], [])
    assert b.commit([], [("new", 1.0, time.time())])[0].seq == 6  # the sequence continues after them
    assert b.commit([], [("old1", 1.0, time.time())])[0].error == "duplicate"
    with pytest.raises(StoreError, match="already holds feedback"):
        a.import_records(recs)


def test_dimension_mismatch_is_one_line(store_url: str) -> None:
    open_store(store_url, D).close()
    with pytest.raises(StoreError, match="holds 8-dimensional embeddings") as e:
        open_store(store_url, D + 1)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("url", "msg"), [
    ("mysql://x/y", "must start with sqlite:/// or postgresql://"),
    ("sqlite://", "write sqlite:///relative/path.db"),
    ("postgresql://knnroute@127.0.0.1:1/db", "cannot reach feedback store"),
])
def test_bad_store_urls_are_one_line(url: str, msg: str) -> None:
    with pytest.raises(StoreError, match=msg) as e:
        open_store(url, D)
    assert "\n" not in str(e.value)


def test_postgres_password_comes_from_the_environment(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match=r"\$KNNROUTE_TEST_PG_PASSWORD is unset"):
        open_store(postgres_url, D, "KNNROUTE_TEST_PG_PASSWORD")
    monkeypatch.setenv("KNNROUTE_TEST_PG_PASSWORD", "secret-pw")
    st = open_store(postgres_url.replace("knnroute@", "knnroute:hunter2@"), D, "KNNROUTE_TEST_PG_PASSWORD")
    try:
        assert "hunter2" not in st.url and st.max_seq() >= 0
    finally:
        st.close()
