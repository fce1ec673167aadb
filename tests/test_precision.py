"""Reduced-precision storage (bf16 / f16 / int8 compact copy + exact float32 re-rank).

The contract (precision.hpp): a search over any precision returns the float32 result bit for bit:
same indices, same similarities, same tie rule, on every ISA path and with the rows of one query
split over threads. The compact scan keeps every row whose error-bounded similarity can reach the
top k, so these tests compare with exact equality, including adversarial near-ties that the compact
copy cannot tell apart.
"""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from knnroute import KNNRouter

ISAS = kc.available_isas()
PRECISIONS = ["bf16", "f16", "int8"]
DIMS = [1, 7, 15, 16, 17, 97, 384, 768]


@pytest.fixture(params=ISAS)
def isa(request):
    before = kc.isa()
    kc.set_isa(request.param)
    yield request.param
    kc.set_isa(before)


def clustered(rng, n, d, centers=20, noise=0.5):
    C = rng.standard_normal((centers, d)).astype(np.float32)
    X = C[rng.integers(0, centers, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(X, dtype=np.float32)


def assert_same_as_f32(X, Q, k, precision, query_threads=1):
    ref = kc.SupportSet(X, query_threads=1)
    ss = kc.SupportSet(X, precision=precision, query_threads=query_threads)
    for b in range(len(Q)):
        i0, s0 = ref.search(Q[b : b + 1], k)
        i1, s1 = ss.search(Q[b : b + 1], k)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_array_equal(s1, s0)


def assert_batch_same_as_f32(X, Q, ks, precision, threads=(1, 2)):
    """The batch search over ``precision`` equals the f32 batch search, for each k and thread count."""
    ref = kc.SupportSet(X, query_threads=1)
    ss = kc.SupportSet(X, precision=precision)
    for k in ks:
        i0, s0 = ref.search(Q, k, n_threads=1)
        for t in threads:
            i1, s1 = ss.search(Q, k, n_threads=t)
            np.testing.assert_array_equal(i1, i0)
            np.testing.assert_array_equal(s1, s0)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", DIMS)
def test_compact_search_equals_f32(isa, precision, d):
    rng = np.random.default_rng(100 + d)
    X = clustered(rng, 300, d)  # crosses the 256-row block boundary
    Q = clustered(rng, 6, d)
    for k in (1, 5, 300):
        assert_same_as_f32(X, Q, k, precision)


@pytest.mark.parametrize("precision", ["f32"] + PRECISIONS)
def test_rows_split_over_threads_equal_one_thread(isa, precision):
    rng = np.random.default_rng(5)
    X = clustered(rng, 5000, 97)  # enough rows for the pool to split one query
    Q = clustered(rng, 5, 97)
    for k in (1, 10, 100, 3000):
        assert_same_as_f32(X, Q, k, precision, query_threads=2)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_near_ties_below_compact_resolution(isa, precision):
    # Rows that differ by less than the compact copy's rounding: the approximate scan sees ties, the
    # exact re-rank must still order them as float32 does (and exact duplicates by lower index).
    rng = np.random.default_rng(9)
    d = 64
    base = rng.standard_normal(d).astype(np.float32)
    base /= np.linalg.norm(base)
    X = np.repeat(base[None], 600, axis=0)
    X[::3] += 1e-5 * rng.standard_normal((200, d)).astype(np.float32)
    X[1::3] += 3e-4 * rng.standard_normal((200, d)).astype(np.float32)
    X = np.ascontiguousarray(X)
    Q = np.ascontiguousarray(np.stack([base, base + 1e-3 * rng.standard_normal(d).astype(np.float32)]))
    for k in (1, 7, 150, 599):
        assert_same_as_f32(X, Q, k, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [7, 64, 97, 384])
def test_batch_search_equals_f32(isa, precision, d):
    # Batches take another path than single queries (int8: query tiles over shared row blocks with
    # one-digit queries and the 4x4 VNNI kernel). Odd sizes exercise every tail: 37 queries (not a
    # multiple of 4 or 16), 1003 rows (not a multiple of 4 or of the 256-row block).
    rng = np.random.default_rng(200 + d)
    X = clustered(rng, 1003, d)
    Q = clustered(rng, 37, d)
    assert_batch_same_as_f32(X, Q, (1, 10, 1003), precision, threads=(1, 2))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_near_ties_below_compact_resolution(isa, precision):
    rng = np.random.default_rng(19)
    d = 64
    base = rng.standard_normal(d).astype(np.float32)
    base /= np.linalg.norm(base)
    X = np.repeat(base[None], 601, axis=0)
    X[::3] += 1e-5 * rng.standard_normal((201, d)).astype(np.float32)
    X[1::3] += 3e-4 * rng.standard_normal((200, d)).astype(np.float32)
    X = np.ascontiguousarray(X)
    Q = np.ascontiguousarray(base + 1e-3 * rng.standard_normal((9, d)).astype(np.float32))
    Q[0] = base
    assert_batch_same_as_f32(X, Q, (1, 7, 150, 600), precision, threads=(2,))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_threshold_sample_fallback(isa, precision):
    # The int8 batch path sets its cut from a strided sample of rows (every 16th, from row 8); here
    # exactly those rows are near the queries, so the sample overstates the k-th bound, the check
    # fails, the rank is raised and finally every row is a candidate. Results stay the f32 ones.
    rng = np.random.default_rng(23)
    d = 48
    base = rng.standard_normal(d).astype(np.float32)
    X = rng.standard_normal((1003, d)).astype(np.float32)
    X[8::16] = base + 0.05 * rng.standard_normal((len(X[8::16]), d)).astype(np.float32)
    Q = np.ascontiguousarray(base + 0.05 * rng.standard_normal((6, d)).astype(np.float32))
    assert_batch_same_as_f32(X, Q, (10, 100, 700), precision, threads=(1,))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_search_large_support_streams(isa, precision):
    # Above 65,536 rows a 4-query tile's similarities to every row no longer fit the int8 batch path's
    # 1 MiB buffer, and it streams the row blocks instead (candidates offered block by block).
    rng = np.random.default_rng(29)
    X = clustered(rng, 70001, 16)
    Q = clustered(rng, 9, 16)
    assert_batch_same_as_f32(X, Q, (1, 100), precision, threads=(2,))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_rerank_candidates_are_few_on_clustered_data(precision):
    rng = np.random.default_rng(3)
    X = clustered(rng, 4000, 384, centers=50)
    Q = clustered(rng, 4, 384, centers=50)
    ss = kc.SupportSet(X, precision=precision, query_threads=1)
    for q in Q:
        ss.search(q[None], 50)
        n = kc.last_rerank_count()
        assert 50 <= n < 4000  # a superset of the top k, far smaller than the support set


def test_memory_and_properties():
    rng = np.random.default_rng(0)
    X = clustered(rng, 100, 32)
    expect = {"f32": 4 * 32, "bf16": 6 * 32 + 4, "f16": 6 * 32 + 4, "int8": 5 * 32 + 12}
    for p, per in expect.items():
        ss = kc.SupportSet(X, precision=p)
        assert ss.precision == p and ss.memory_bytes == 100 * per
    assert kc.precisions() == ["f32", "bf16", "f16", "int8"]
    assert kc.pool_threads() >= 1
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        kc.SupportSet(X, precision="fp8")
    with pytest.raises(ValueError, match="query_threads"):
        kc.SupportSet(X, query_threads=-1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_router_route_one_and_updates_match_f32(isa, precision):
    rng = np.random.default_rng(4)
    N, d, M = 3000, 48, 11
    X = clustered(rng, N, d)
    S = (rng.random((N, M)) < 0.5).astype(np.float32)
    C = (rng.random((N, M)) * 1e-3).astype(np.float32)
    Q = clustered(rng, 12, d)
    lams = np.array([0.0, 300.0, 3000.0])
    r32 = kc.Router(X, S, C, k=40)
    rp = kc.Router(X, S, C, k=40, precision=precision, query_threads=2)
    assert rp.precision == precision and rp.memory_bytes > r32.memory_bytes
    for q in Q:
        for lam in lams:
            assert rp.route_one(q, lam) == r32.route_one(q, lam)
    np.testing.assert_array_equal(rp.route(Q[:2], lams), r32.route(Q[:2], lams))
    np.testing.assert_array_equal(rp.route(Q, lams), r32.route(Q, lams))
    # live updates keep the compact copy in step with the float32 rows
    extra = clustered(rng, 500, d)
    rp.add(extra, S[:500], C[:500])
    r32.add(extra, S[:500], C[:500])
    rp.remove([0, 5, 2999, 3400])
    r32.remove([0, 5, 2999, 3400])
    for q in Q:
        np.testing.assert_array_equal(rp.search(q[None], 40)[0], r32.search(q[None], 40)[0])
        assert rp.route_one(q, 300.0) == r32.route_one(q, 300.0)


@pytest.mark.parametrize("precision", ["f32"] + PRECISIONS)
def test_knn_router_precision_keyword(precision):
    rng = np.random.default_rng(8)
    X = clustered(rng, 800, 32).astype(np.float64)
    S = (rng.random((800, 5)) < 0.5).astype(float)
    C = rng.random((800, 5)) * 1e-3
    Q = clustered(rng, 10, 32)
    ref = KNNRouter(k=20).fit(X, S, C)
    r = KNNRouter(k=20, precision=precision).fit(X, S, C)
    assert r.core_.precision == precision
    np.testing.assert_array_equal(r.route(Q, [0.0, 500.0]), ref.route(Q, [0.0, 500.0]))
    for q in Q:
        assert r.route_one(q, 500.0) == ref.route_one(q, 500.0)
    assert r.memory_bytes() >= ref.memory_bytes()
    assert f"precision={precision!r}" in repr(r)
    with pytest.raises(ValueError, match="precision must be one of"):
        KNNRouter(precision="fp4").fit(X, S, C)


def test_hnsw_index_recall_and_routing():
    pytest.importorskip("hnswlib")
    rng = np.random.default_rng(2)
    X = clustered(rng, 3000, 32, centers=30)
    S = (rng.random((3000, 4)) < 0.5).astype(np.float32)
    C = (rng.random((3000, 4)) * 1e-3).astype(np.float32)
    Q = clustered(rng, 50, 32, centers=30)
    exact = KNNRouter(k=20).fit(X, S, C)
    approx = KNNRouter(k=20, index="hnsw", hnsw_ef=200).fit(X, S, C)
    ie, se = exact.kneighbors(Q)
    ia, sa = approx.kneighbors(Q)
    assert ia.shape == ie.shape and ia.dtype == np.int64 and sa.dtype == np.float32
    assert np.all(np.diff(sa, axis=1) <= 1e-6)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(ia, ie, strict=False)])
    assert recall > 0.9
    agree = (approx.route(Q, [0.0, 500.0]) == exact.route(Q, [0.0, 500.0])).mean()
    assert agree > 0.9
    for q in Q[:5]:
        assert approx.route_one(q, 500.0) == approx.route(q, 500.0)[0]
    assert approx.memory_bytes() > 0
    with pytest.raises(ValueError, match="index must be one of"):
        KNNRouter(index="ivf").fit(X, S, C)


def test_forked_child_searches_without_the_pool():
    # A child forked after the worker pool started has no workers: it must fall back to one thread.
    import multiprocessing as mp

    rng = np.random.default_rng(6)
    X = clustered(rng, 5000, 97)
    Q = clustered(rng, 2, 97)
    ss = kc.SupportSet(X, precision="int8", query_threads=2)
    expect = ss.search(Q[:1], 10)[0]  # starts the pool in the parent
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_child_search, (X, Q[:1])).get(timeout=60)
    np.testing.assert_array_equal(got, expect)


def _child_search(X, Q):
    assert kc.pool_threads() == 1
    return kc.SupportSet(X, precision="int8", query_threads=2).search(Q, 10)[0]


def test_unpickled_float32_arrays_are_accepted():
    import pickle

    rng = np.random.default_rng(1)
    X = pickle.loads(pickle.dumps(clustered(rng, 50, 8)))
    assert kc.SupportSet(X).size == 50
    with pytest.raises(TypeError, match="float32"):
        kc.SupportSet(X.astype(">f4"))


@pytest.mark.parametrize("precision", ["f32"] + PRECISIONS)
def test_large_support_grows_and_shrinks(isa, precision):
    # 2,500 x 384 float32 rows are 3.7 MiB: past the 2 MiB at which the row arrays take the huge-page
    # allocator (hugepage.hpp). add() reallocates through it and remove() compacts in place; the
    # result must stay the exact top k of the rows that remain (NumPy reference).
    rng = np.random.default_rng(17)
    X = clustered(rng, 2500, 384, centers=40)
    extra = clustered(rng, 1700, 384, centers=40)
    Q = clustered(rng, 5, 384, centers=40)
    M = 3
    S = rng.random((len(X) + len(extra), M)).astype(np.float32)
    C = rng.random((len(X) + len(extra), M)).astype(np.float32)
    ss = kc.Router(X, S[: len(X)], C[: len(X)], k=100, precision=precision, query_threads=1)
    ss.add(extra, S[len(X) :], C[len(X) :])
    gone = [0, 7, 2499, 2500, 4199]
    ss.remove(gone)
    rows = np.delete(np.concatenate([X, extra]), gone, axis=0)
    assert len(ss) == len(rows)
    Xn = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    for q in Q:
        idx, sim = ss.search(q[None], 100)
        exact = Xn @ (q / np.linalg.norm(q))
        want = np.argsort(-exact, kind="stable")[:100]
        assert set(idx[0]) == set(want)  # cosine ties are absent from continuous data
        np.testing.assert_allclose(sim[0], exact[idx[0]], atol=2e-6)
    ref = kc.SupportSet(rows, query_threads=1)
    i0, s0 = ref.search(Q, 100, n_threads=1)
    for b in range(len(Q)):
        i1, s1 = ss.search(Q[b : b + 1], 100)
        np.testing.assert_array_equal(i1[0], i0[b])
        np.testing.assert_array_equal(s1[0], s0[b])
