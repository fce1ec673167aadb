"""Per-model neighbourhoods and time decay in the core router (issue 29, items 1 and 3), against the
NumPy references in tests/reference.py, on every instruction-set path."""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from tests import reference as ref

ISAS = kc.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    before = kc.isa()
    kc.set_isa(request.param)
    yield request.param
    kc.set_isa(before)


def _problem(pattern: str, seed: int = 0, n: int = 600, d: int = 24, M: int = 5):
    """Embeddings, scores (with the NaN pattern), costs. n > 256 crosses the scan's row-block border."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    S = (rng.random((n, M)) < 0.5).astype(np.float32)
    C = (rng.random((n, M)) * 1e-3).astype(np.float32)
    if pattern == "feedback":  # the first 150 rows full, then rows observing one model each (as feedback)
        one = rng.integers(M, size=n)
        mask = np.arange(M)[None, :] != one[:, None]
        mask[:150] = False
        S[mask] = np.nan
        C[mask] = np.nan
    elif pattern == "random":  # any cell missing with probability 0.5; a few rows observe nothing
        S[rng.random((n, M)) < 0.5] = np.nan
        S[:7] = np.nan
    elif pattern == "sparse-model":  # model 0 observed on 6 rows only (k above its count), model 1 never
        S[6:, 0] = np.nan
        S[:, 1] = np.nan
        S[rng.random((n, M)) < 0.2] = np.nan
    elif pattern == "interleaved":  # partial and full rows alternate, costs missing where scores are not
        S[1::2, rng.integers(M)] = np.nan
        C[::3, 2] = np.nan
    return rng, X, S, C


def _separated(Q, X, obs_rows, k):
    """Whether the float64 ranks 1..k+1 of Q among obs_rows are apart by more than float32 noise."""
    s = np.sort(ref.cosine(Q[None, :], X[obs_rows])[0])[::-1][: k + 1]
    return len(s) < 2 or np.min(np.abs(np.diff(s))) > 1e-5


PATTERNS = ["feedback", "random", "sparse-model", "interleaved"]


def core_lists(r, Q, S):
    """The reference's common-radius lists from the core's per-model lists and similarities."""
    idx, sim, cnt = r.search_per_model(Q)
    n = r.size
    order, sims = r.search(Q, n)  # every row, float32 as the scan computes them
    A = np.empty((len(Q), n), np.float32)
    np.put_along_axis(A, order, sims, axis=1)
    return ref.radius_lists(idx, sim, cnt, A, S), (idx, sim, cnt)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("k", [1, 10, 40])
def test_neighbours_match_reference(isa, pattern, k):
    rng, X, S, C = _problem(pattern, seed=k)
    Q = rng.standard_normal((12, X.shape[1])).astype(np.float32)
    r = kc.Router(X, S, C, k=k)
    assert r.partial_rows > 0
    idx, sim, cnt = r.search_per_model(Q)
    ridx, rsim, rcnt = ref.topk_per_model(Q, X, S, k)
    np.testing.assert_array_equal(cnt, rcnt)
    assert idx.shape == (len(Q), S.shape[1], k) and sim.dtype == np.float32
    np.testing.assert_allclose(sim, rsim, atol=2e-6)
    checked = 0
    for b in range(len(Q)):
        for m in range(S.shape[1]):
            c = cnt[b, m]
            assert np.all(idx[b, m, c:] == -1)
            assert np.all(np.diff(sim[b, m, :c]) <= 0)
            assert np.all(~np.isnan(S[idx[b, m, :c], m]))  # every neighbour observed the model
            if _separated(Q[b], X, np.flatnonzero(~np.isnan(S[:, m])), k):
                np.testing.assert_array_equal(idx[b, m], ridx[b, m])
                checked += 1
    assert checked >= len(Q) * S.shape[1] // 2


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("weighting", "shrinkage"), [("uniform", 0.0), ("similarity", 2.0), ("softmax", 0.0),
                                                      ("uniform", 5.0)])
def test_predictions_match_reference(isa, pattern, weighting, shrinkage):
    rng, X, S, C = _problem(pattern, seed=3)
    Q = rng.standard_normal((10, X.shape[1])).astype(np.float32)
    r = kc.Router(X, S, C, k=15, weighting=weighting, temperature=0.1, shrinkage=shrinkage)
    # the reference aggregation over the core's neighbour lists (their order is checked above), widened
    # to the common radius
    lists, (idx, sim, cnt) = core_lists(r, Q, S)
    rs, rc, rn, rsp = ref.predict_per_model(lists, S, C, weighting, 0.1, shrinkage)
    sh, ch, n, sp = r.predict_stats(Q)
    np.testing.assert_allclose(sh, rs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ch, rc, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(n, rn, rtol=1e-5)
    np.testing.assert_allclose(sp, rsp, rtol=1e-5, atol=1e-6)
    # one path for predict, predict_stats, route and the fused single query
    p_s, p_c = r.predict(Q)
    np.testing.assert_array_equal(p_s, sh)
    np.testing.assert_array_equal(p_c, ch)
    lams = np.array([0.0, 300.0, 3000.0])
    routed = r.route(Q, lams)
    np.testing.assert_array_equal(routed, kc.route(sh, ch, lams))
    for b in range(len(Q)):
        det = r.route_one_detail(Q[b], 300.0)
        assert det["model"] == routed[b, 1] == r.route_one(Q[b], 300.0)
        np.testing.assert_array_equal(det["s_hat"], sh[b])
        np.testing.assert_array_equal(det["count"], n[b])
        m = det["model"]
        assert det["kth_similarity"] == (sim[b, m, cnt[b, m] - 1] if cnt[b, m] else -1.0)


def test_reference_neighbours_give_reference_predictions():
    """Fully independent of the core's neighbour lists: reference search + radius + aggregation."""
    rng, X, S, C = _problem("feedback", seed=11)
    Q = rng.standard_normal((8, X.shape[1])).astype(np.float32)
    r = kc.Router(X, S, C, k=12, weighting="similarity", shrinkage=1.0)
    ridx, rsim, rcnt = ref.topk_per_model(Q, X, S, 12)
    A = ref.cosine(Q, X)
    lists = ref.radius_lists(ridx, rsim, rcnt, A, S)
    rs, rc, _, _ = ref.predict_per_model(lists, S, C, "similarity", shrinkage=1.0)
    sh, ch = r.predict(Q)
    checked = 0
    for b in range(len(Q)):
        R = min(rsim[b, m, -1] for m in range(S.shape[1]) if rcnt[b, m] == 12)
        near = np.abs(A[b] - R)
        if np.sum(near < 1e-5) > 1:  # a float32 tie at the radius: the sets may differ by that row
            continue
        checked += 1
        np.testing.assert_allclose(sh[b], rs[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ch[b], rc[b], rtol=1e-5, atol=1e-9)
    assert checked >= 6


def test_common_radius_widens_well_observed_models():
    """A model that feedback observed densely near the query averages all its rows within the radius of
    the least observed model's k-th neighbour, not only its own k nearest."""
    rng, X, S, C = _problem("feedback", seed=12)
    Q = rng.standard_normal((5, X.shape[1])).astype(np.float32)
    r = kc.Router(X, S, C, k=10)
    lists, (idx, sim, cnt) = core_lists(r, Q, S)
    _, _, n, _ = r.predict_stats(Q)
    for b in range(len(Q)):
        R = min(sim[b, m, -1] for m in range(S.shape[1]))
        for m in range(S.shape[1]):
            assert len(lists[b][m][0]) >= 10 and np.all(lists[b][m][1] >= R)
            assert n[b, m] == len(lists[b][m][0])  # uniform weights: the count is the list's length
        assert max(len(lists[b][m][0]) for m in range(S.shape[1])) > 10


def test_ties_go_to_the_lower_index(isa):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    X = np.concatenate([base] * 8)  # every row 8 times: exact ties in every neighbourhood
    M = 3
    S = rng.random((len(X), M)).astype(np.float32)
    S[np.arange(len(X)) % 2 == 1, rng.integers(M)] = np.nan
    C = np.full_like(S, 1e-4)
    r = kc.Router(X, S, C, k=20)
    Q = base[:5] + 0.01 * rng.standard_normal((5, 16)).astype(np.float32)
    idx, sim, cnt = r.search_per_model(Q)
    for b in range(5):
        for m in range(M):
            c = cnt[b, m]
            key = list(zip((-sim[b, m, :c]).tolist(), idx[b, m, :c].tolist(), strict=True))
            assert key == sorted(key)  # similarity descending, then index ascending
            obs = np.flatnonzero(~np.isnan(S[:, m]))
            s_all = ref.cosine(Q[b][None, :], X[obs])[0]
            assert set(idx[b, m, :c]) <= set(obs.tolist()) and c == min(20, len(obs))
            assert sim[b, m, c - 1] >= np.sort(s_all)[::-1][c - 1] - 1e-5


def test_full_rows_are_unchanged_by_partial_rows_beyond_them(isa):
    """A router whose extra partial rows are never among the k nearest observing rows takes the
    per-model path and returns the original path's results bit for bit."""
    rng, X, S, C = _problem("none", seed=2)
    # an extra axis the support rows and queries do not use: rows along it have similarity 0 to every
    # query, below each query's 25 nearest of 600 rows (all well above 0)
    X = np.ascontiguousarray(np.column_stack([X, np.zeros(len(X), np.float32)]))
    Q = np.ascontiguousarray(np.column_stack([rng.standard_normal((15, X.shape[1] - 1)), np.zeros(15)]),
                             dtype=np.float32)
    far = np.zeros((len(Q), X.shape[1]), np.float32)
    far[:, -1] = 1.0
    for weighting, shrinkage in [("uniform", 0.0), ("similarity", 3.0), ("softmax", 0.0)]:
        a = kc.Router(X, S, C, k=25, weighting=weighting, shrinkage=shrinkage)
        b = kc.Router(X, S, C, k=25, weighting=weighting, shrinkage=shrinkage)
        assert a.partial_rows == 0
        s = np.full((len(Q), S.shape[1]), np.nan, np.float32)
        s[:, 0] = 1.0
        b.add(far, s, np.where(np.isnan(s), np.nan, 5e-4).astype(np.float32))
        assert b.partial_rows == len(Q)
        assert np.all(a.search(Q, 25)[1][:, -1] > 0.1)
        sa, ca = a.predict(Q)
        sb, cb = b.predict(Q)
        # model 0's prior moved (the new rows' scores count in the column mean): compare what the
        # neighbours decide, every model, and with shrinkage only the models whose prior is unchanged
        cols = slice(None) if shrinkage == 0 else slice(1, None)
        np.testing.assert_array_equal(sa[:, cols], sb[:, cols])
        np.testing.assert_array_equal(ca[:, cols], cb[:, cols])


def test_decay_of_one_is_the_original_path_bit_for_bit(isa):
    """With every row at time 0 the decay weights are 1: the general path (shared top-k, per-model
    aggregation) equals the original path bit for bit, in every precision."""
    rng, X, S, C = _problem("none", seed=4)
    Q = rng.standard_normal((9, X.shape[1])).astype(np.float32)
    for precision in ("f32", "int8", "bf16"):
        for weighting in ("uniform", "similarity", "softmax"):
            a = kc.Router(X, S, C, k=30, weighting=weighting, shrinkage=1.5, precision=precision)
            b = kc.Router(X, S, C, k=30, weighting=weighting, shrinkage=1.5, precision=precision)
            b.half_life = 10.0
            for x, y in zip(a.predict(Q), b.predict(Q), strict=True):
                np.testing.assert_array_equal(x, y)
            sa, ca, na, spa = a.predict_stats(Q)
            sb, cb, nb, spb = b.predict_stats(Q)
            np.testing.assert_array_equal(sa, sb)
            np.testing.assert_array_equal(na, nb)
            np.testing.assert_array_equal(spa, spb)
            for q in Q:
                assert a.route_one(q, 200.0) == b.route_one(q, 200.0)


@pytest.mark.parametrize("precision", ["bf16", "f16", "int8"])
def test_compact_precisions_with_partial_rows_equal_f32(isa, precision):
    rng, X, S, C = _problem("feedback", seed=6)
    Q = rng.standard_normal((7, X.shape[1])).astype(np.float32)
    a = kc.Router(X, S, C, k=20, shrinkage=2.0)
    b = kc.Router(X, S, C, k=20, shrinkage=2.0, precision=precision)
    for x, y in zip(a.predict(Q), b.predict(Q), strict=True):
        np.testing.assert_array_equal(x, y)
    for q in Q:
        assert a.route_one(q, 100.0) == b.route_one(q, 100.0)


def test_time_decay_matches_reference(isa):
    rng, X, S, C = _problem("feedback", seed=8)
    n = len(X)
    times = np.zeros(n)
    times[150:] = np.arange(1, n - 150 + 1)  # feedback rows carry their sequence number
    Q = rng.standard_normal((6, X.shape[1])).astype(np.float32)
    r = kc.Router(X[:150], S[:150], C[:150], k=15, weighting="similarity")
    r.add(X[150:], S[150:], C[150:], times=times[150:])
    np.testing.assert_array_equal(r.times(), times)
    r.half_life = 50.0
    lists, _ = core_lists(r, Q, S)
    rs, rc, rn, rsp = ref.predict_per_model(lists, S, C, "similarity", times=times, half_life=50.0)
    sh, ch, cn, sp = r.predict_stats(Q)
    np.testing.assert_allclose(sh, rs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ch, rc, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(cn, rn, rtol=1e-4)
    np.testing.assert_allclose(sp, rsp, rtol=1e-4, atol=1e-6)
    # set_times restores the same state; half_life 0 turns decay off
    r2 = kc.Router(X, S, C, k=15, weighting="similarity")
    r2.set_times(times)
    r2.half_life = 50.0
    np.testing.assert_array_equal(r2.predict(Q)[0], sh)
    r2.half_life = 0.0
    rs0, _, _, _ = ref.predict_per_model(lists, S, C, "similarity")
    np.testing.assert_allclose(r2.predict(Q)[0], rs0, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="half_life"):
        r2.half_life = -1.0
    with pytest.raises(ValueError, match="times"):
        r2.set_times(times[:-1])
    with pytest.raises(ValueError, match="times"):
        r2.add(X[:1], S[:1], C[:1], times=[np.inf])


def test_updates_equal_rebuilt_router_with_partial_rows():
    rng, X, S, C = _problem("feedback", seed=9)
    Q = rng.standard_normal((10, X.shape[1])).astype(np.float32)
    r = kc.Router(X[:200], S[:200], C[:200], k=20)
    r.add(X[200:], S[200:], C[200:])
    full = kc.Router(X, S, C, k=20)
    np.testing.assert_array_equal(r.predict(Q)[0], full.predict(Q)[0])
    drop = [0, 199, 300, 599]
    r.remove(drop)
    keep = np.setdiff1d(np.arange(len(X)), drop)
    rebuilt = kc.Router(*(np.ascontiguousarray(a[keep]) for a in (X, S, C)), k=20)
    assert r.partial_rows == rebuilt.partial_rows
    np.testing.assert_array_equal(r.predict(Q)[0], rebuilt.predict(Q)[0])
    col = np.full(len(keep), np.nan, np.float32)
    col[:30] = 1.0
    r.add_model(col, np.where(np.isnan(col), np.nan, 1e-4).astype(np.float32))
    idx, _, cnt = r.search_per_model(Q)
    assert np.all(cnt[:, -1] == 20) and np.all(idx[:, -1, :] < 30)  # the new model's own rows


def test_without_common_radius_each_model_uses_its_own_k_nearest(isa):
    rng, X, S, C = _problem("feedback", seed=13)
    Q = rng.standard_normal((6, X.shape[1])).astype(np.float32)
    r = kc.Router(X, S, C, k=10, weighting="softmax", temperature=0.1)
    r.common_radius = False
    idx, sim, cnt = r.search_per_model(Q)
    lists = [[(idx[b, m, : cnt[b, m]], sim[b, m, : cnt[b, m]]) for m in range(S.shape[1])] for b in range(len(Q))]
    rs, rc, rn, _ = ref.predict_per_model(lists, S, C, "softmax", 0.1)
    sh, ch, n, _ = r.predict_stats(Q)
    np.testing.assert_allclose(sh, rs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ch, rc, rtol=1e-6, atol=1e-12)
    assert r.common_radius is False
    r.common_radius = True
    assert not np.array_equal(r.predict(Q)[0], sh)
