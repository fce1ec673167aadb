"""knnroute_core against NumPy / pure-Python references, on every instruction-set path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knnroute_core as kc
from tests import reference as ref

ISAS = kc.available_isas()
DIMS = [1, 7, 15, 16, 17, 97, 384, 768]


@pytest.fixture(params=ISAS)
def isa(request):
    before = kc.isa()
    kc.set_isa(request.param)
    yield request.param
    kc.set_isa(before)


def unit(rng, n, d):
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X


def assert_valid_topk(Q, X, idx, sim, k):
    """idx/sim are an exact top-k up to float32 rounding; where the reference has no near-tie the
    indices match exactly."""
    S = ref.cosine(Q, X)
    ridx, rsim = ref.topk(Q, X, k)
    assert idx.shape == (len(Q), k) and idx.dtype == np.int64
    assert sim.shape == (len(Q), k) and sim.dtype == np.float32
    for b in range(len(Q)):
        assert len(set(idx[b].tolist())) == k
        np.testing.assert_allclose(sim[b], S[b, idx[b]], atol=2e-6)
        assert np.all(np.diff(sim[b]) <= 0)
        assert sim[b, -1] >= rsim[b, -1] - 2e-6
        # exact agreement wherever the reference ranks are separated by more than float32 noise
        srt = np.sort(S[b])[::-1]
        gaps = np.abs(np.diff(srt))
        for j in range(k):
            lo = gaps[j - 1] if j > 0 else np.inf
            hi = gaps[j] if j < len(gaps) else np.inf
            if lo > 1e-5 and hi > 1e-5:
                assert idx[b, j] == ridx[b, j]


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", ["one", "five", "all"])
def test_topk_matches_reference(isa, d, kind):
    rng = np.random.default_rng(d)
    N = 300  # crosses the 256-row block boundary
    X = unit(rng, N, d)
    Q = unit(rng, 9, d)
    k = {"one": 1, "five": 5, "all": N}[kind]
    idx, sim = kc.topk_cosine(Q, X, k)
    assert_valid_topk(Q, X, idx, sim, k)


def test_support_set_batch_equals_single_and_threads(isa):
    rng = np.random.default_rng(1)
    X = unit(rng, 1000, 97)
    Q = unit(rng, 37, 97)
    ss = kc.SupportSet(X)
    idx, sim = ss.search(Q, 25)
    for n_threads in (1, 2, 3):
        i2, s2 = ss.search(Q, 25, n_threads=n_threads)
        np.testing.assert_array_equal(i2, idx)
        np.testing.assert_array_equal(s2, sim)
    for b in range(len(Q)):
        i1, s1 = ss.search(Q[b : b + 1], 25)
        np.testing.assert_array_equal(i1[0], idx[b])
        np.testing.assert_array_equal(s1[0], sim[b])
    assert_valid_topk(Q, X, idx, sim, 25)


@pytest.mark.parametrize("d", [1, 16, 17, 384])
def test_ties_go_to_lower_index(isa, d):
    rng = np.random.default_rng(7)
    base = unit(rng, 5, d)
    X = np.ascontiguousarray(np.tile(base, (60, 1)))  # row r duplicates row r % 5
    Q = np.ascontiguousarray(base[[2, 4]] * 3.0)  # same direction as rows 2 and 4
    idx, sim = kc.topk_cosine(Q, X, 60)
    for b, r in enumerate([2, 4]):
        expect = np.arange(r, 300, 5)[:60]
        if d == 1:  # in 1-D every positive row ties with the query: lower index first among equals
            pos = np.flatnonzero(X[:, 0] * Q[b, 0] > 0)
            expect = pos[:60]
        np.testing.assert_array_equal(idx[b], expect)
        assert np.all(sim[b] == sim[b, 0])


@pytest.mark.parametrize("precision", ["f32", "int8"])
def test_order_with_negative_zero_and_tied_similarities(isa, precision):
    # The final sort (similarity descending, ties to the lower index) runs on integer keys built from
    # the float bits, with a fallback when a similarity is exactly +-0: check both against NumPy.
    d = 8
    e = np.eye(d, dtype=np.float32)
    rows = [e[1], -e[0], e[0], e[2], e[0], -e[0], e[0] + e[1], e[0] - e[1], -e[3], e[3], e[0] + e[1]]
    X = np.ascontiguousarray(np.tile(np.stack(rows), (3, 1)))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    no_zero = e[0] + 0.5 * e[1] + 0.25 * e[2] + 0.125 * e[3]  # no similarity is 0: the integer-key path
    assert np.all(X @ no_zero != 0)
    for q, k in ((no_zero, 33), (-no_zero, 33), (e[0], 33), (e[0] + 0.5 * e[1], 33), (-e[0] + 0.25 * e[3], 20)):
        q = np.ascontiguousarray(q[None], dtype=np.float32)
        ss = kc.SupportSet(X, precision=precision, query_threads=1)
        idx, sim = ss.search(q, k)
        exact = (Xn @ (q[0] / np.linalg.norm(q[0]))).astype(np.float32)
        want = np.lexsort((np.arange(len(X)), -exact))[:k]
        np.testing.assert_array_equal(idx[0], want)
        np.testing.assert_allclose(sim[0], exact[want], atol=1e-6)
        assert np.all(np.diff(sim[0]) <= 0)
        ties = sim[0][1:] == sim[0][:-1]
        assert np.all(idx[0][1:][ties] > idx[0][:-1][ties])


def test_zero_row_similarities_and_scaled_queries(isa):
    rng = np.random.default_rng(3)
    X = unit(rng, 50, 33)
    Q = unit(rng, 4, 33)
    i1, s1 = kc.topk_cosine(Q, X, 10)
    i2, s2 = kc.topk_cosine(np.ascontiguousarray(Q * 1000.0), X, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_isas_agree():
    rng = np.random.default_rng(11)
    X = unit(rng, 2000, 384)
    Q = unit(rng, 20, 384)
    before = kc.isa()
    out = {}
    try:
        for name in ISAS:
            kc.set_isa(name)
            out[name] = kc.topk_cosine(Q, X, 100)
    finally:
        kc.set_isa(before)
    for name in ISAS:
        np.testing.assert_allclose(out[name][1], out["scalar"][1], atol=2e-6)
        assert (out[name][0] == out["scalar"][0]).mean() > 0.99


@pytest.mark.parametrize("name", ISAS)
def test_env_var_selects_isa(name):
    code = "import knnroute_core as k; print(k.isa())"
    env = {**os.environ, "KNNROUTE_ISA": name}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == name


def test_env_var_rejects_unknown_isa():
    code = (
        "import numpy as np, knnroute_core as k;"
        " k.topk_cosine(np.ones((1,4),np.float32), np.ones((2,4),np.float32), 1)"
    )
    env = {**os.environ, "KNNROUTE_ISA": "sse9"}
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown ISA 'sse9'" in out.stderr


KNOWN_ISAS = ["scalar", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "neon", "neon-dotprod"]  # narrowest first


def test_available_isas_reports_this_machine():
    assert ISAS[0] == "scalar"
    assert ISAS == [name for name in KNOWN_ISAS if name in ISAS]
    if "avx512-vnni" in ISAS:  # VNNI is a level above AVX-512, never instead of it
        assert "avx512" in ISAS
    if "avx2-vnni" in ISAS:
        assert "avx2" in ISAS
    if "neon-dotprod" in ISAS:
        assert "neon" in ISAS
    # one architecture's levels only
    assert not ({"avx2", "neon"} <= set(ISAS))
    assert kc.isa() in ISAS
    with pytest.raises(ValueError, match="unknown ISA"):
        kc.set_isa("sse9")
    other = "neon" if "avx2" in ISAS else "avx2"
    with pytest.raises(ValueError, match="not supported"):
        kc.set_isa(other)


def test_default_isa_is_the_widest():
    code = "import knnroute_core as k; print(k.isa(), k.available_isas()[-1])"
    env = {key: v for key, v in os.environ.items() if key != "KNNROUTE_ISA"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    active, widest = out.stdout.split()
    assert active == widest


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    import knnroute

    assert kc.__version__ == knnroute.__version__ == version("knnroute")


# --- aggregation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("weighting", ["uniform", "similarity", "softmax"])
@pytest.mark.parametrize("shrinkage", [0.0, 3.0])
def test_aggregate_matches_reference(weighting, shrinkage):
    rng = np.random.default_rng(5)
    N, M, B, k = 80, 6, 12, 10
    S = rng.random((N, M)).astype(np.float32)
    C = (rng.random((N, M)) * 1e-3).astype(np.float32)
    S[rng.random((N, M)) < 0.2] = np.nan
    C[rng.random((N, M)) < 0.2] = np.nan
    S[:, 5] = np.nan  # a model never observed: falls back to its prior (0)
    idx = rng.integers(0, N, (B, k)).astype(np.int64)
    sim = np.sort(rng.uniform(-0.2, 1.0, (B, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    sh, ch = kc.aggregate(idx, sim, S, C, weighting=weighting, temperature=0.1, shrinkage=shrinkage)
    rs, rc = ref.aggregate(idx, sim, S, C, weighting, 0.1, shrinkage)
    np.testing.assert_allclose(sh, rs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ch, rc, rtol=1e-5, atol=1e-10)
    assert np.all(sh[:, 5] == 0.0)


def test_aggregate_no_observed_neighbour_uses_mean():
    S = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, 0.5]], np.float32)
    C = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    idx = np.array([[0, 1]], np.int64)
    sim = np.array([[0.9, 0.8]], np.float32)
    sh, ch = kc.aggregate(idx, sim, S, C)
    np.testing.assert_allclose(sh, [[0.5, 0.5]])  # model 1: no observed neighbour -> its mean 0.5
    np.testing.assert_allclose(ch, [[2.0, 3.0]])


# --- routing, envelope, sweep ------------------------------------------------------------------

def test_route_matches_reference_with_ties():
    rng = np.random.default_rng(2)
    s = rng.integers(0, 4, (50, 7)).astype(np.float32) / 4
    c = rng.integers(0, 3, (50, 7)).astype(np.float32) / 2
    lams = np.array([0.0, 0.5, 1.0, 2.0, 100.0])
    np.testing.assert_array_equal(kc.route(s, c, lams), ref.route(s, c, lams))


def test_route_tie_rule_cheaper_then_lower_index():
    s = np.array([[0.5, 0.5, 0.5, 0.5]], np.float32)
    c = np.array([[0.3, 0.1, 0.1, 0.2]], np.float32)
    assert kc.route(s, c, [0.0])[0, 0] == 1


def test_envelope_matches_dense_routing():
    rng = np.random.default_rng(4)
    for _ in range(200):
        M = int(rng.integers(1, 12))
        s = rng.random(M).astype(np.float32)
        c = (rng.random(M) * 1e-2).astype(np.float32)
        if rng.random() < 0.3:  # duplicates: equal scores or equal costs
            s[rng.integers(0, M)] = s[0]
            c[rng.integers(0, M)] = c[0]
        lams, models = kc.envelope(s, c)
        assert lams[0] == 0 and np.all(np.diff(lams) > 0)
        # costs strictly decrease along the envelope
        assert np.all(np.diff(c[models]) < 0)
        probes = list((lams[:-1] + lams[1:]) / 2) + [lams[-1] * 2 + 1.0, 0.0]
        owners = list(range(len(lams) - 1)) + [len(lams) - 1, 0]
        got = ref.route(s[None], c[None], probes)[0]
        for p, o in zip(got, owners, strict=False):
            assert p == models[o]


def _fill(n, M, rng):
    ts = (rng.random((n, M)) < 0.6).astype(np.float64) * 100
    tc = rng.random((n, M)) * 1e-3
    return ts, tc


def test_sweep_equals_dense_grid_with_all_breakpoints():
    rng = np.random.default_rng(9)
    B, M = 120, 11
    s_hat = rng.random((B, M)).astype(np.float32)
    c_hat = (rng.random((B, M)) * 1e-3).astype(np.float32)
    ts, tc = _fill(B, M, rng)
    _lams, mc, ms = kc.sweep(s_hat, c_hat, ts, tc)
    bps = np.unique(np.concatenate([kc.envelope(s_hat[b], c_hat[b])[0] for b in range(B)]))
    grid = np.unique(np.concatenate([bps, (bps[:-1] + bps[1:]) / 2, [bps[-1] * 2 + 1]]))
    choice = ref.route(s_hat, c_hat, grid)
    gc = tc[np.arange(B)[:, None], choice].mean(0)
    gs = ts[np.arange(B)[:, None], choice].mean(0)
    c_max = tc.mean(0).max()
    a_sweep = kc.hull_auc(mc, ms, c_max)
    a_grid = kc.hull_auc(gc, gs, c_max)
    assert abs(a_sweep - a_grid) < 1e-6
    # every sweep point is a grid point (midpoints realise each segment)
    pts = set(zip(np.round(gc, 12), np.round(gs, 9), strict=False))
    for p in zip(np.round(mc, 12), np.round(ms, 9), strict=False):
        assert p in pts


def test_sweep_oracle_first_point_is_best_score():
    ts = np.array([[100.0, 0.0], [0.0, 100.0]])
    tc = np.array([[2.0, 1.0], [2.0, 1.0]])
    _lams, mc, ms = kc.sweep(ts.astype(np.float32), tc.astype(np.float32), ts, tc)
    assert ms[0] == 100.0 and mc[0] == 1.5
    assert ms[-1] == 50.0 and mc[-1] == 1.0


# --- hull and AUC ---------------------------------------------------------------------------------

def test_auc_hand_computed():
    # one point (0.5, 80), c_max 1: triangle 0.5*0.5*80 + flat 0.5*80 = 60
    assert kc.hull_auc([0.5], [80.0], 1.0) == pytest.approx(60.0)
    # a point past c_max is clipped at x = 1: hull from (0,0) to (2, 80) -> at x=1 y=40 -> area 20
    assert kc.hull_auc([2.0], [80.0], 1.0) == pytest.approx(20.0)
    # dominated point below the chord is ignored
    assert kc.hull_auc([0.5, 0.25], [80.0, 10.0], 1.0) == pytest.approx(60.0)
    # duplicate costs: the higher score counts
    assert kc.hull_auc([0.5, 0.5], [10.0, 80.0], 1.0) == pytest.approx(60.0)
    # a point after the maximum with lower score is cut (non-decreasing)
    assert kc.hull_auc([0.5, 0.8], [80.0, 70.0], 1.0) == pytest.approx(60.0)
    # zero-cost point: flat from x = 0
    assert kc.hull_auc([0.0], [50.0], 1.0) == pytest.approx(50.0)
    # c_max scaling: (1, 80) with c_max 2 == (0.5, 80) with c_max 1
    assert kc.hull_auc([1.0], [80.0], 2.0) == pytest.approx(60.0)
    hc, hs = kc.nondecreasing_hull([0.5, 0.25, 0.8], [80.0, 10.0, 70.0])
    np.testing.assert_allclose(hc, [0.0, 0.5])
    np.testing.assert_allclose(hs, [0.0, 80.0])


def test_auc_matches_pure_python_reference():
    rng = np.random.default_rng(12)
    for _ in range(60):
        P = int(rng.integers(1, 9))
        c = rng.random(P) * 1.5
        s = rng.random(P) * 100
        if rng.random() < 0.3:
            c[0] = 0.0
        cmax = float(rng.uniform(0.3, 1.2))
        assert kc.hull_auc(c, s, cmax) == pytest.approx(ref.hull_auc_py(c, s, cmax), abs=1e-9)


points = st.lists(
    st.tuples(st.floats(0, 10, allow_nan=False), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=25
)


@settings(max_examples=150, deadline=None)
@given(points)
def test_hull_is_nondecreasing_and_concave(pts):
    c, s = np.array(pts).T
    hc, hs = kc.nondecreasing_hull(c, s)
    assert hc[0] == 0.0 or hc[0] == min(c)
    assert np.all(np.diff(hc) > 0)
    assert np.all(np.diff(hs) >= -1e-12)
    for i in range(1, len(hc) - 1):  # strictly right turns (concave), checked without division
        cross = (hc[i] - hc[i - 1]) * (hs[i + 1] - hs[i - 1]) - (hs[i] - hs[i - 1]) * (hc[i + 1] - hc[i - 1])
        assert cross < 0
    # every input point lies on or under the (flat-extended) hull
    for ci, si in zip(c, s, strict=False):
        y = np.interp(ci, hc, hs)
        assert si <= y + 1e-9 * (1 + abs(y))


@settings(max_examples=150, deadline=None)
@given(points, st.lists(st.floats(0, 20, allow_nan=False), min_size=25, max_size=25), st.floats(0.1, 12))
def test_auc_of_dominating_curve_is_not_smaller(pts, bumps, cmax):
    c, s = np.array(pts).T
    better = s + np.array(bumps[: len(s)])
    assert kc.hull_auc(c, better, cmax) >= kc.hull_auc(c, s, cmax) - 1e-9
    cheaper = c * 0.5
    assert kc.hull_auc(cheaper, s, cmax) >= kc.hull_auc(c, s, cmax) - 1e-9


# --- fused Router ------------------------------------------------------------------------------

def _router_problem(seed=0, N=600, d=48, M=11):
    rng = np.random.default_rng(seed)
    X = unit(rng, N, d)
    S = (rng.random((N, M)) < 0.5).astype(np.float32)
    C = (rng.random((N, M)) * 1e-3).astype(np.float32)
    S[rng.random((N, M)) < 0.05] = np.nan
    return rng, X, S, C


@pytest.mark.parametrize(("weighting", "shrinkage"), [("uniform", 0.0), ("similarity", 2.0), ("softmax", 0.0)])
def test_router_predict_route_match_composition(isa, weighting, shrinkage):
    rng, X, S, C = _router_problem()
    # full rows: the router is the shared top-k + aggregate composition (with partial rows each model
    # has its own neighbourhood: tests/test_per_model.py)
    S = np.ascontiguousarray(np.nan_to_num(S, nan=0.25))
    Q = unit(rng, 30, X.shape[1])
    r = kc.Router(X, S, C, k=40, weighting=weighting, temperature=0.1, shrinkage=shrinkage)
    idx, sim = kc.topk_cosine(Q, X, 40)
    sh_ref, ch_ref = kc.aggregate(idx, sim, S, C, weighting, 0.1, shrinkage)
    sh, ch = r.predict(Q)
    np.testing.assert_array_equal(sh, sh_ref)
    np.testing.assert_array_equal(ch, ch_ref)
    lams = np.array([0.0, 100.0, 1000.0, 1e5])
    routed = r.route(Q, lams)
    np.testing.assert_array_equal(routed, kc.route(sh, ch, lams))
    for b in range(len(Q)):
        for j, lam in enumerate(lams):
            assert r.route_one(Q[b], lam) == routed[b, j]
        det = r.route_one_detail(Q[b], 100.0)
        assert det["model"] == routed[b, 1]
        assert 0.0 <= det["agreement"] <= 1.0
        assert det["kth_similarity"] == pytest.approx(sim[b, -1])


def test_router_updates_equal_rebuilt_router():
    rng, X, S, C = _router_problem(seed=1)
    Q = unit(rng, 25, X.shape[1])
    r = kc.Router(X[:500], S[:500], C[:500], k=30)
    r.add(X[500:], S[500:], C[500:])
    full = kc.Router(X, S, C, k=30)
    np.testing.assert_array_equal(r.route(Q, [0.0, 500.0]), full.route(Q, [0.0, 500.0]))
    drop = [3, 17, 17, 599, 250]
    r.remove(drop)
    keep = np.setdiff1d(np.arange(600), drop)
    rebuilt = kc.Router(
        np.ascontiguousarray(X[keep]), np.ascontiguousarray(S[keep]), np.ascontiguousarray(C[keep]), k=30
    )
    assert r.size == len(keep)
    np.testing.assert_array_equal(r.predict(Q)[0], rebuilt.predict(Q)[0])
    new_s = rng.random(len(keep)).astype(np.float32)
    new_c = np.full(len(keep), 1e-6, np.float32)
    r.add_model(new_s, new_c)
    assert r.n_models == 12
    S2 = np.ascontiguousarray(np.column_stack([S[keep], new_s]))
    C2 = np.ascontiguousarray(np.column_stack([C[keep], new_c]))
    rebuilt2 = kc.Router(np.ascontiguousarray(X[keep]), S2, C2, k=30)
    np.testing.assert_array_equal(r.predict(Q)[1], rebuilt2.predict(Q)[1])


# --- bad input -----------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    X = unit(rng, 10, 8)
    Q = unit(rng, 2, 8)
    with pytest.raises(ValueError, match="dimension"):
        kc.topk_cosine(unit(rng, 2, 7), X, 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        kc.topk_cosine(Q, X, 0)
    with pytest.raises(ValueError, match="exceeds the base size"):
        kc.topk_cosine(Q, X, 11)
    with pytest.raises(ValueError, match="zero vector"):
        kc.topk_cosine(np.zeros((1, 8), np.float32), X, 3)
    Xbad = X.copy()
    Xbad[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4 has a NaN"):
        kc.SupportSet(Xbad)
    Xz = X.copy()
    Xz[6] = 0
    with pytest.raises(ValueError, match="row 6 is a zero vector"):
        kc.SupportSet(Xz)
    for bad in (np.inf, -np.inf, np.float32("nan"), -np.float32("nan")):
        Xb = X.copy()
        Xb[3, 7] = bad
        with pytest.raises(ValueError, match="row 3 has a NaN or infinite value"):
            kc.SupportSet(Xb)
    Xz = X.copy()
    Xz[2] = -0.0  # negative zeros are still a zero vector
    with pytest.raises(ValueError, match="row 2 is a zero vector"):
        kc.SupportSet(Xz)
    Xs = X.copy()
    Xs[5] = 0
    Xs[5, 1] = np.float32(1e-45)  # one subnormal value: not a zero vector, normalises to e_1
    ss = kc.SupportSet(Xs)
    idx, sim = ss.search(np.eye(8, dtype=np.float32)[1:2], 1)
    assert idx[0, 0] == 5 and sim[0, 0] == 1.0
    with pytest.raises(ValueError, match="empty"):
        kc.SupportSet(np.zeros((0, 8), np.float32))
    with pytest.raises(TypeError, match="float32"):
        kc.topk_cosine(Q.astype(np.float64), X, 3)
    with pytest.raises(TypeError, match="C-contiguous"):
        kc.topk_cosine(np.asfortranarray(np.tile(Q, (1, 2)))[:, ::2], X, 3)
    with pytest.raises(ValueError, match="2-D"):
        kc.topk_cosine(Q[0], X, 3)
    S = rng.random((10, 3)).astype(np.float32)
    C = rng.random((10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="one row per embedding"):
        kc.Router(X, S[:9], C[:9], k=3)
    Cneg = C.copy()
    Cneg[2, 1] = -1
    with pytest.raises(ValueError, match="negative"):
        kc.Router(X, S, Cneg, k=3)
    with pytest.raises(ValueError, match="exceeds the support size"):
        kc.Router(X, S, C, k=11)
    r = kc.Router(X, S, C, k=3)
    with pytest.raises(ValueError, match="dimension 9"):
        r.route_one(np.ones(9, np.float32), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        r.route_one(np.full(8, np.nan, np.float32), 0.0)
    with pytest.raises(ValueError, match="weighting"):
        kc.Router(X, S, C, k=3, weighting="cosine")
    with pytest.raises(ValueError, match="fill missing cells"):
        kc.sweep(S, C, np.full((10, 3), np.nan), C.astype(np.float64))
    with pytest.raises(ValueError, match="negative cost"):
        kc.hull_auc([-1.0], [3.0], 1.0)
    with pytest.raises(ValueError, match="c_max"):
        kc.hull_auc([1.0], [3.0], 0.0)
    with pytest.raises(ValueError, match="cannot remove every row"):
        r.remove(list(range(10)))


def test_add_model_concurrent_with_predict() -> None:
    """Queries racing add_model on the bare core: every output has the width of one consistent state.

    The bindings once sized (M,) outputs before the core took its lock, so a concurrent add_model made
    the core write past them (found by ASan). Now the width is checked under the lock; each result must
    equal a serial query against the router with either the old or the new number of models.
    """
    import threading

    rng = np.random.default_rng(7)
    n, d, M, extra = 400, 32, 3, 6
    X = rng.standard_normal((n, d)).astype(np.float32)
    S = rng.random((n, M)).astype(np.float32)
    C = (rng.random((n, M)) * 1e-3).astype(np.float32)
    cols = [(rng.random(n).astype(np.float32), (rng.random(n) * 1e-3).astype(np.float32)) for _ in range(extra)]
    Q = rng.standard_normal((8, d)).astype(np.float32)
    # Serial references: the prediction for every number of models the router passes through.
    refs = {}
    serial = kc.Router(X, S, C, k=20)
    for m in range(M, M + extra + 1):
        refs[m] = serial.predict(Q)
        if m < M + extra:
            serial.add_model(*cols[m - M])
    live = kc.Router(X, S, C, k=20)
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            s_hat, c_hat = live.predict(Q, n_threads=1)
            m = s_hat.shape[1]
            if c_hat.shape != s_hat.shape or not np.array_equal(s_hat, refs[m][0]):
                errors.append(f"predict width {m} differs from the serial router")
            det = live.route_one_detail(Q[0], 0.0)
            m1 = det["s_hat"].shape[0]
            if not np.array_equal(det["s_hat"], refs[m1][0][0]) or not 0 <= det["model"] < m1:
                errors.append(f"route_one_detail width {m1} differs from the serial router")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for s_col, c_col in cols:
        live.add_model(s_col, c_col)
    stop.set()
    for t in threads:
        t.join()
    assert live.n_models == M + extra
    assert not errors, errors[:3]
    s_tab = live.scores()
    assert s_tab.shape == (n, M + extra)
