"""Evaluation: hull/AUC definition, exact sweep vs dense grids, reference rows, tuning, runner, diagnostics.

The NumPy references in ``tests/reference.py`` define the numbers; the compiled core, which computes
every curve, must agree with them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knnroute.evaluate import appendix_d, curves, diagnostics, references
from knnroute.evaluate.runner import EvalData, resolve_routers, run_one, split_indices
from knnroute.routers import tuned as tuning
from knnroute.routers.neighbours import search
from tests import reference


# --------------------------------------------------------------------------- hull and AUC by hand
@pytest.mark.parametrize(
    ("cost", "score", "c_max", "area"),
    [
        # One point (0.5, 80): triangle from (0, 0) then flat: 0.5*0.5*80 + 0.5*80.
        ([0.5], [80.0], 1.0, 60.0),
        # Same point in other cost units.
        ([1.0], [80.0], 2.0, 60.0),
        # Past c_max: the segment (0,0)-(2,80) is cut at x = 1 where it reaches 40.
        ([2.0], [80.0], 1.0, 20.0),
        # A dominated point (0.5, 40) changes nothing: (0,0),(0.2,50),(0.6,90), flat.
        ([0.2, 0.5, 0.6], [50.0, 40.0, 90.0], 1.0, 0.2 * 50 / 2 + 0.4 * 140 / 2 + 0.4 * 90),
        # Below the chord (not concave): (0.1, 10) is dropped.
        ([0.1, 0.2], [10.0, 60.0], 1.0, 0.2 * 60 / 2 + 0.8 * 60),
        # Duplicate costs: the better one counts.
        ([0.5, 0.5], [30.0, 80.0], 1.0, 60.0),
        # Cut after the highest score: a later, lower point is ignored; flat from (0.25, 90).
        ([0.25, 0.5], [90.0, 85.0], 1.0, 0.25 * 90 / 2 + 0.75 * 90),
        # A free point (0, 40) lifts the left end above the null router.
        ([0.0, 0.5], [40.0, 80.0], 1.0, 0.5 * 120 / 2 + 0.5 * 80),
        # Two points beyond c_max, the hull cut inside its second segment.
        ([0.5, 3.0], [50.0, 100.0], 1.0, 0.5 * 50 / 2 + 0.5 * (50 + 60) / 2),
        # A point exactly at c_max.
        ([1.0], [100.0], 1.0, 50.0),
    ],
)
def test_hull_auc_hand_computed(
    cost: list[float], score: list[float], c_max: float, area: float
) -> None:
    assert curves.hull_auc(cost, score, c_max) == pytest.approx(area, abs=1e-12)


def test_hull_vertices_hand_computed() -> None:
    hc, hs = curves.nondecreasing_hull([0.2, 0.5, 0.6, 0.9, 0.1], [50.0, 40.0, 90.0, 90.0, 10.0])
    np.testing.assert_allclose(hc, [0.0, 0.2, 0.6])
    np.testing.assert_allclose(hs, [0.0, 50.0, 90.0])


@pytest.mark.parametrize(
    ("cost", "score", "c_max", "match"),
    [
        ([0.5], [80.0], 0.0, "c_max"),
        ([-0.1], [80.0], 1.0, "cost"),
        ([np.nan], [80.0], 1.0, "finite"),
        ([0.5], [np.inf], 1.0, "finite"),
    ],
)
def test_hull_auc_rejects_bad_input(
    cost: list[float], score: list[float], c_max: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        curves.hull_auc(cost, score, c_max)


def test_random_row_is_one_point_with_the_null_anchor() -> None:
    rng = np.random.default_rng(3)
    s = (rng.random((400, 4)) < np.array([0.3, 0.5, 0.7, 0.9])).astype(float)
    c = rng.uniform(0.5, 1.5, (400, 4)) * np.array([1.0, 2.0, 4.0, 8.0])
    c_max = curves.cost_scale(c)
    rr = references.random_router(s, c, c_max, seed=7)
    assert rr.aucs.shape == (references.N_RANDOM,)
    x, y = rr.cost / c_max, rr.score
    np.testing.assert_allclose(rr.aucs, y * (1 - x / 2), rtol=1e-12)
    assert rr.auc == pytest.approx(float(np.mean(y * (1 - x / 2))))
    # Reproducible, and a different seed draws differently.
    assert references.random_router(s, c, c_max, seed=7).auc == rr.auc
    assert references.random_router(s, c, c_max, seed=8).auc != rr.auc


def test_best_single_and_single_rows() -> None:
    s = np.array([[1.0, 1.0], [0.0, 1.0]])
    c = np.array([[1.0, 4.0], [1.0, 4.0]])
    c_max = curves.cost_scale(c)
    assert c_max == 4.0
    singles = references.single_model_curves(s, c, c_max)
    assert singles[0].auc == pytest.approx(0.25 * 50 / 2 + 0.75 * 50)
    assert singles[1].auc == pytest.approx(50.0)
    best = references.best_single_curve(s, c, c_max)
    # Hull (0,0),(0.25,50),(1,100): 6.25 + 0.75*150/2.
    assert best.auc == pytest.approx(6.25 + 56.25)


def test_oracle_first_point_is_cheapest_correct_model() -> None:
    s = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    c = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    cv = references.oracle_curve(s, c, curves.cost_scale(c))
    # lambda = 0: prompt 0 -> model 1 (cost 2), prompt 1 -> model 2 (cost 1), prompt 2 (nothing right) -> cheapest.
    assert cv.cost[0] == pytest.approx((2 + 1 + 1) / 3)
    assert cv.score[0] == pytest.approx(200 / 3)
    # Large lambda: everything on the cheapest model.
    assert cv.cost[-1] == pytest.approx(1.0)
    assert cv.score[-1] == pytest.approx(100 / 3)


def test_gain() -> None:
    assert curves.gain(80.0, 70.0, 90.0) == pytest.approx(0.5)
    assert curves.gain(60.0, 70.0, 90.0) == pytest.approx(-0.5)
    assert np.isnan(curves.gain(70.0, 70.0, 70.0))


def test_fill_missing_and_c_max() -> None:
    s = np.array([[np.nan, 0.5], [1.0, np.nan]])
    c = np.array([[1.0, np.nan], [3.0, 4.0]])
    fs, fc = curves.fill_missing(s, c)
    np.testing.assert_array_equal(fs, [[0.0, 0.5], [1.0, 0.0]])
    np.testing.assert_array_equal(fc, [[1.0, 4.0], [3.0, 4.0]])  # missing cost -> the model's mean cost
    assert curves.cost_scale(fc) == 4.0
    with pytest.raises(ValueError, match="zero mean cost"):
        curves.cost_scale(np.zeros((3, 2)))


# --------------------------------------------------------------------------- routing and the exact sweep
def test_route_and_envelope_tie_rules() -> None:
    s = np.array([0.9, 0.8, 0.5])
    c = np.array([3.0, 1.0, 2.0])
    lams, models = reference.envelope(s, c)
    np.testing.assert_allclose(lams, [0.0, 0.05])
    np.testing.assert_array_equal(models, [0, 1])
    # Equal utility: the cheaper model, then the lower index.
    assert reference.route([[0.5, 0.5, 0.5]], [[2.0, 1.0, 1.0]], [0.0])[0, 0] == 1


def _random_problem(seed: int, b: int = 80, m: int = 7):
    rng = np.random.default_rng(seed)
    s_hat = rng.random((b, m)).astype(np.float32)
    c_hat = (rng.random((b, m)) * np.geomspace(1e-5, 1e-3, m)).astype(np.float32)
    ts = (rng.random((b, m)) < np.linspace(0.3, 0.9, m)).astype(float)
    tc = c_hat * rng.uniform(0.5, 1.5, (b, m))
    return s_hat, c_hat, ts, tc


@pytest.mark.parametrize("seed", range(6))
def test_exact_sweep_equals_dense_grid_with_every_breakpoint(seed: int) -> None:
    s_hat, c_hat, ts, tc = _random_problem(seed, b=int(20 + 30 * seed), m=int(2 + seed))
    c_max = curves.cost_scale(tc)
    exact = curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max)
    lams = exact.lams
    assert lams is not None and lams[0] == 0.0 and np.all(np.diff(lams) > 0)
    # A dense grid holding every breakpoint. At a breakpoint the routed model is decided by a float
    # comparison of two equal utilities, which rounding can tip either way; the midpoints make sure each
    # constant piece of the curve is also sampled strictly inside.
    dense = reference.dense_lambda_grid(c_max, 1000)
    grid = np.unique(np.concatenate([dense, lams, (lams[:-1] + lams[1:]) / 2, [2 * lams[-1] + 1]]))
    gridded = curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max, lams=grid)
    assert gridded.auc == pytest.approx(exact.auc, abs=1e-6)
    # A grid alone can only miss points: never above the exact AUC.
    coarse = curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max, lams=dense)
    assert coarse.auc <= exact.auc + 1e-9
    assert reference.dense_grid_auc(s_hat, c_hat, ts, tc, c_max) == pytest.approx(coarse.auc, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_core_matches_reference(seed: int) -> None:
    import knnroute_core as core

    s_hat, c_hat, ts, tc = _random_problem(seed, b=60, m=9)
    if seed % 2:  # tied predictions (kNN means of 0/1 scores tie often)
        s_hat = (np.round(s_hat * 4) / 4).astype(np.float32)
    for a, b in zip(core.sweep(s_hat, c_hat, ts, tc), reference.sweep(s_hat, c_hat, ts, tc), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    lams = np.concatenate([[0.0], np.geomspace(1e-2, 1e5, 50)])
    np.testing.assert_array_equal(core.route(s_hat, c_hat, lams), reference.route(s_hat, c_hat, lams))
    for row in range(5):
        got, want = core.envelope(s_hat[row], c_hat[row]), reference.envelope(s_hat[row], c_hat[row])
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    mc, ms = ts.mean(0) * 0 + tc.mean(0), 100 * ts.mean(0)
    assert core.hull_auc(mc, ms, 1e-3) == pytest.approx(reference.hull_auc(mc, ms, 1e-3), abs=1e-12)


# --------------------------------------------------------------------------- hypothesis properties
_points = st.lists(
    st.tuples(st.floats(0.0, 2.0, allow_subnormal=False), st.floats(0.0, 100.0, allow_subnormal=False)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None, database=None)
@given(_points)
def test_hull_is_nondecreasing_and_concave(pts: list[tuple[float, float]]) -> None:
    c, s = map(np.array, zip(*pts, strict=False))
    hc, hs = reference.nondecreasing_hull(c, s)
    assert hc[0] == 0.0
    assert np.all(np.diff(hc) > 0)
    assert np.all(np.diff(hs) > 0)
    # Concave: every consecutive triple turns clockwise (or is collinear within rounding).
    dx1, dy1 = hc[1:-1] - hc[:-2], hs[1:-1] - hs[:-2]
    dx2, dy2 = hc[2:] - hc[:-2], hs[2:] - hs[:-2]
    assert np.all(dx1 * dy2 - dy1 * dx2 <= 1e-9 * (1 + np.abs(dx1 * dy2)))
    assert hs[-1] == pytest.approx(max(0.0, s.max()))
    # Every point lies on or below the hull (flat to the right).
    below = np.interp(c, hc, hs, right=hs[-1])
    assert np.all(s <= below + 1e-9 * (1 + np.abs(below)))
    auc = reference.hull_auc(c, s, 1.0)
    assert 0.0 <= auc <= s.max() + 1e-9


@settings(max_examples=150, deadline=None, database=None)
@given(
    _points,
    st.lists(st.floats(0.0, 20.0), min_size=25, max_size=25),
    st.lists(st.floats(0.5, 1.0), min_size=25, max_size=25),
    st.floats(0.05, 3.0),
)
def test_dominating_curve_has_no_smaller_auc(
    pts: list[tuple[float, float]], lift: list[float], shrink: list[float], c_max: float
) -> None:
    c, s = map(np.array, zip(*pts, strict=False))
    n = c.size
    better_s = s + np.array(lift[:n])
    better_c = c * np.array(shrink[:n])
    assert reference.hull_auc(better_c, better_s, c_max) >= reference.hull_auc(c, s, c_max) - 1e-9
    # Adding points never lowers the AUC.
    assert (
        reference.hull_auc(np.r_[c, better_c], np.r_[s, better_s], c_max)
        >= reference.hull_auc(better_c, better_s, c_max) - 1e-9
    )


# --------------------------------------------------------------------------- selection protocol
def test_selection_utilities_hand_computed() -> None:
    s = np.array([[1.0, 0.0], [1.0, 1.0]])
    c = np.array([[4.0, 1.0], [4.0, 1.0]])
    c_max = curves.cost_scale(c)  # 4
    out = appendix_d.oracle_selection(s, c, c_max)
    # lam_n = 1 (lam = 1/4): prompt 0: u = 1-1=0 vs 0-0.25 -> model 0 (0); prompt 1: 0 vs 0.75 -> model 1.
    assert out["sel_1"] == pytest.approx(100 * (0.0 + 0.75) / 2)
    # lam_n = 0.1: prompt 0 -> model 0 (0.9), prompt 1 -> model 1 (0.975).
    assert out["sel_0.1"] == pytest.approx(100 * (0.9 + 0.975) / 2)
    assert out["sel_mean"] == pytest.approx(np.mean([out["sel_1"], out["sel_0.5"], out["sel_0.1"]]))
    single = appendix_d.best_single_selection(s, c, c_max)
    assert single["sel_1"] == pytest.approx(100 * max(1 - 1.0, 0.5 - 0.25))
    assert appendix_d.random_selection(s, c, c_max)["sel_mean"] <= out["sel_mean"]


# --------------------------------------------------------------------------- tuning
def _clustered(n: int = 400, d: int = 16, m: int = 4, seed: int = 0):
    """Prompts in clusters; each cluster has its own best model, so neighbours carry information."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, d))
    lab = rng.integers(0, 8, n)
    X = (centres[lab] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    p = rng.uniform(0.1, 0.95, (8, m))[lab]
    S = (rng.random((n, m)) < p).astype(float)
    C = np.geomspace(1e-5, 1e-3, m) * rng.uniform(0.8, 1.2, (n, m))
    S[rng.random((n, m)) < 0.03] = np.nan
    return X, S, C


def test_knn_grid() -> None:
    g = tuning.knn_grid(60)
    assert {c.k for c in g} == {5, 10, 20, 50, 60}
    assert len(g) == 5 * len(tuning.WEIGHTINGS) * len(tuning.SHRINKAGES)
    assert g[0] == tuning.KNNConfig(k=5)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_sliced_search_equals_a_router_with_that_k(k: int) -> None:
    X, S, C = _clustered()
    # full rows: the tuner's sliced search shares one neighbourhood among the models, which is the
    # router's only while every row observes every model (with missing cells the router uses per-model
    # neighbourhoods: tests/test_per_model.py; the tuner does not yet)
    S = np.nan_to_num(S, nan=0.0)
    idx, sim = search(X[:300], X[300:], 60)
    cfg = tuning.KNNConfig(k=k, weighting="softmax", temperature=0.05, shrinkage=5.0)
    sh, ch = tuning.aggregate(idx, sim, S[:300].astype(np.float32), C[:300].astype(np.float32), cfg)
    rs, rc = tuning.make_knn_router(cfg).fit(X[:300], S[:300], C[:300]).predict(X[300:])
    np.testing.assert_allclose(sh, rs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ch, rc, rtol=1e-5, atol=1e-9)


def test_tuned_knn_picks_the_best_validation_config() -> None:
    X, S, C = _clustered(seed=1)
    tr, va = slice(0, 280), slice(280, 340)
    res = tuning.tune_knn(X[tr], S[tr], C[tr], X[va], S[va], C[va])
    aucs = [row["val_auc"] for row in res.table]
    assert res.val_auc == max(aucs)
    assert res.table[aucs.index(max(aucs))]["k"] == res.best.k
    router = tuning.TunedKNNRouter(random_state=0).fit(
        X[tr], S[tr], C[tr], X_val=X[va], scores_val=S[va], costs_val=C[va]
    )
    assert router.best_ == res.best
    ref = tuning.make_knn_router(res.best).fit(X[tr], S[tr], C[tr])
    np.testing.assert_array_equal(router.route(X[340:], 1e2), ref.route(X[340:], 1e2))
    # Without validation arrays it holds out part of the training set itself.
    assert tuning.TunedKNNRouter(random_state=0).fit(X[tr], S[tr], C[tr]).best_.k <= 245


def _with_input_costs(seed: int = 3):
    """Clustered prompts whose cost is a known input part (prompt length x input price, varying a lot
    across prompts and unrelated to the embedding) plus a per-model output part."""
    X, S, C = _clustered(seed=seed)
    rng = np.random.default_rng(seed + 100)
    n, m = S.shape
    tokens = rng.lognormal(5.0, 2.0, n)  # prompt lengths spread over orders of magnitude
    price_in = np.geomspace(1e-6, 1e-5, m)  # USD per input token
    K = tokens[:, None] * price_in[None, :]
    C = K + np.geomspace(1e-7, 1e-5, m)[None, :]  # a small output part per model
    return X, S, C, K


def test_tuned_knn_input_cost_model() -> None:
    """Validation picks cost = known input cost + neighbours' rest when the cost is mostly input; the
    predicted cost is then exact, routing needs the queries' input costs, and without them it is an error."""
    X, S, C, K = _with_input_costs()
    tr, va, te = slice(0, 280), slice(280, 340), slice(340, 400)
    res = tuning.tune_knn(X[tr], S[tr], C[tr], X[va], S[va], C[va], input_cost_train=K[tr], input_cost_val=K[va])
    assert res.cost_model == "input+knn"
    assert {row["cost_model"] for row in res.table} == {"knn", "input+knn"}
    assert res.val_auc == max(row["val_auc"] for row in res.table)
    router = tuning.TunedKNNRouter(random_state=0).fit(
        X[tr], S[tr], C[tr], X_val=X[va], scores_val=S[va], costs_val=C[va], input_cost=K[tr], input_cost_val=K[va]
    )
    assert router.cost_model_ == "input+knn" and "input+knn" in repr(router)
    s_hat, c_hat = router.predict(X[te], input_cost=K[te])
    np.testing.assert_allclose(c_hat, C[te], rtol=1e-5)  # residual is one constant per model: exact
    ref = tuning.make_knn_router(router.best_).fit(X[tr], S[tr], C[tr] - K[tr])
    np.testing.assert_allclose(s_hat, ref.predict(X[te])[0], rtol=1e-6)
    lams = np.array([0.0, 1e2, 1e4])
    np.testing.assert_array_equal(router.route(X[te], lams, input_cost=K[te]),
                                  reference.route(s_hat, c_hat, lams))
    with pytest.raises(ValueError, match="pass input_cost"):
        router.predict(X[te])
    with pytest.raises(ValueError, match="shape"):
        router.route(X[te], 1.0, input_cost=K[te][:, :2])
    with pytest.raises(ValueError, match="both"):
        tuning.TunedKNNRouter().fit(X[tr], S[tr], C[tr], X_val=X[va], scores_val=S[va], costs_val=C[va],
                                    input_cost=K[tr])
    # Without input costs the search is the plain one (no cost_model column, cost model knn).
    plain = tuning.tune_knn(X[tr], S[tr], C[tr], X[va], S[va], C[va])
    assert plain.cost_model == "knn" and "cost_model" not in plain.table[0]
    # The known part helps: test AUC of the chosen router >= the plain tuned router's on this data.
    ts, tc = curves.fill_missing(S[te], C[te])
    cm = curves.cost_scale(tc)
    auc_in = curves.curve_from_predictions(s_hat, c_hat, ts, tc, cm).auc
    plain_router = tuning.make_knn_router(plain.best).fit(X[tr], S[tr], C[tr])
    auc_plain = curves.router_curve(plain_router, X[te], S[te], C[te]).auc
    assert auc_in > auc_plain


def test_run_one_passes_input_costs_to_knn_tuned() -> None:
    X, S, C, K = _with_input_costs(seed=4)
    ed = EvalData("known", X, S, C, [f"m{j}" for j in range(S.shape[1])], generated=True, meta={"input_cost": K})
    rec = run_one(ed, "knn-tuned", 0).records[0]
    assert rec["cost_model"] == "input+knn"
    rec_plain = run_one(EvalData("plain", X, S, C, ed.model_names, generated=True), "knn-tuned", 0).records[0]
    assert rec_plain["cost_model"] == "knn"
    assert rec["auc"] > rec_plain["auc"]


def test_dataset_input_costs() -> None:
    from knnroute.data import RoutingDataset

    ds = RoutingDataset("t", ["a", "b"], np.ones((2, 2)), np.ones((2, 2)), prompts=["abcd", "abcdefgh"],
                        prices={"a": (2.0, 9.0)})
    np.testing.assert_allclose(ds.input_costs(), [[2e-6, 0.0], [4e-6, 0.0]])  # b has no price: 0
    assert RoutingDataset("t", ["a"], np.ones((1, 1)), np.ones((1, 1)), prompts=["x"]).input_costs() is None
    ed = EvalData.from_dataset(ds.with_embeddings(np.eye(2, dtype=np.float32)))
    np.testing.assert_allclose(ed.meta["input_cost"], ds.input_costs())


# --------------------------------------------------------------------------- runner
def _eval_data(shipped: bool = False) -> EvalData:
    X, S, C = _clustered(n=300, seed=2)
    split = None
    if shipped:
        split = np.array(["train"] * 200 + ["val"] * 20 + ["test"] * 80, dtype=object)
    return EvalData("clusters", X, S, C, [f"m{j}" for j in range(S.shape[1])], split=split, generated=True)


def test_split_indices() -> None:
    sp = split_indices(1000, 3)
    assert (sp.train.size, sp.val.size, sp.test.size) == (700, 100, 200)
    assert np.unique(np.concatenate([sp.train, sp.val, sp.test])).size == 1000
    assert not np.array_equal(split_indices(1000, 4).test, sp.test)
    lab = np.array(["train"] * 90 + ["val"] * 10 + ["test"] * 50, dtype=object)
    a, b = split_indices(150, 0, lab), split_indices(150, 1, lab)
    np.testing.assert_array_equal(a.test, np.arange(100, 150))  # the shipped test set, whatever the seed
    np.testing.assert_array_equal(b.test, a.test)
    assert a.val.size == 12 and not np.array_equal(a.val, b.val)  # 1/8 of the pooled 100, re-carved
    assert a.shipped


def _nan_safe(v):  # type: ignore[no-untyped-def]
    """NaN as a string, so records with NaN fields (e.g. a router that never matches the best model's
    score: ``match_cost_share``) compare equal across runs and processes (NaN != NaN)."""
    return "NaN" if isinstance(v, float) and math.isnan(v) else v


def _strip_timing(recs: list[dict]) -> list[dict]:
    return [
        {k: _nan_safe(v) for k, v in r.items() if not (k.endswith("_seconds") or "_us_" in k)} for r in recs
    ]


@pytest.mark.parametrize("shipped", [False, True])
def test_run_one_is_pure_and_complete(shipped: bool) -> None:
    data = _eval_data(shipped)
    names = ["oracle", "random", "best-single", "single", "knn-10", "knn-100", "knn-tuned"]
    out = {r: run_one(data, r, 1) for r in names}
    for r in names:
        again = run_one(data, r, 1)
        assert _strip_timing(again.records) == _strip_timing(out[r].records)
    recs = {rec["router"]: rec for o in out.values() for rec in o.records}
    assert recs["oracle"]["gain"] == 1.0 and recs["best-single"]["gain"] == 0.0
    assert {f"single:m{j}" for j in range(4)} <= set(recs)
    for rec in recs.values():
        assert {
            "dataset",
            "router",
            "seed",
            "auc",
            "gain",
            "auc_oracle",
            "auc_best_single",
            "c_max",
            "sel_mean",
        } <= set(rec)
        assert 0.0 <= rec["auc"] <= recs["oracle"]["auc"] + 1e-9
    assert recs["knn-100"]["k"] == min(100, recs["knn-100"]["n_train"])
    assert "val_auc" in recs["knn-tuned"] and "tuning" in out["knn-tuned"].extra
    # The clusters make routing pay: kNN beats the best single model.
    assert recs["knn-100"]["gain"] > 0


def test_grid_option_lowers_or_keeps_auc() -> None:
    data = _eval_data()
    exact = run_one(data, "knn-10", 0).records[0]
    coarse = run_one(data, "knn-10", 0, lams=[0.0, 1.0, 10.0]).records[0]
    assert coarse["auc"] <= exact["auc"] + 1e-9 and coarse["sweep"] == "grid(3)"


def test_resolve_routers() -> None:
    assert resolve_routers("knn-10")[:4] == ["oracle", "random", "best-single", "single"]
    assert "knn-tuned" in resolve_routers("all")
    with pytest.raises(ValueError, match="unknown router"):
        resolve_routers("knn-7,nope")


# --------------------------------------------------------------------------- diagnostics
def test_locality_and_twonn() -> None:
    X, S, _ = _clustered(n=600, seed=4)
    loc = diagnostics.locality(X, S, n_pairs=50_000)
    assert loc.bin_distance.shape == (10,) and np.all(np.diff(loc.bin_distance) > 0)
    assert loc.r < -0.5  # nearer pairs agree more
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 40)) + 8.0 * rng.normal(size=(1, 40))
    assert diagnostics.twonn(Z) == pytest.approx(5.0, rel=0.2)
    # Scores with no relation to the embeddings: no locality.
    flat = diagnostics.locality(X, rng.random(S.shape) < 0.5, n_pairs=50_000)
    assert abs(flat.r_pairs) < 0.05


def test_confidence_reference_matches_knn_router() -> None:
    from knnroute.routers.knn import KNNRouter

    X, S, C = _clustered(n=300, seed=5)
    S = np.nan_to_num(S, nan=0.0)  # full rows: shared neighbourhoods (partial rows: tests/test_per_model.py)
    C[::7, 1] = np.nan
    router = KNNRouter(k=12).fit(X[:250], S[:250], C[:250])
    lam = 300.0
    got = router.confidence(X[250:], lam)
    idx, sim = router.kneighbors(X[250:])
    ref = reference.confidence(
        sim,
        S[:250][idx],
        C[:250][idx],
        got["model"],
        lam,
        prior_costs=reference.column_means(C[:250].astype(np.float32)),
    )
    np.testing.assert_allclose(got["kth_similarity"], ref["kth_similarity"], rtol=1e-6)
    np.testing.assert_allclose(got["agreement"], ref["agreement"], atol=1e-6)


def test_confidence_check_runs() -> None:
    X, S, C = _clustered(n=400, seed=6)
    out = diagnostics.confidence_check(X[:300], S[:300], C[:300], X[300:], S[300:], C[300:], k=20)
    assert out["mean_regret"] >= 0 and 0 <= out["mean_agreement"] <= 1


# --------------------------------------------------------------------------- real data: calibration
PAPER_ORACLE = {"arc_challenge": 97.99, "mbpp": 85.02, "winograde": 99.48}


@pytest.mark.realdata
def test_oracle_calibration_on_routerbench_subset(real_data) -> None:
    from knnroute.data import load_dataset

    got = {}
    for ds in load_dataset(real_data / "routerbench-0shot-subset"):
        test = ds.split == "test"
        ts, tc = curves.fill_missing(ds.scores[test], ds.costs[test])
        got[ds.name] = references.oracle_curve(ts, tc, curves.cost_scale(tc)).auc
    assert set(got) == set(PAPER_ORACLE)
    for name, paper in PAPER_ORACLE.items():
        assert abs(got[name] - paper) <= 1.5, (name, got[name], paper)


class _CheapestAboveLambda:
    """A selection router (route only): the best model at lam = 0, the cheapest beyond lam = 1 / c."""

    selection = True

    def __init__(self, switch: float) -> None:
        self.switch = switch

    def route(self, X: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
        lam_arr = np.atleast_1d(lam)
        out = np.where(lam_arr[None, :] < self.switch, 1, 0).repeat(len(X), axis=0)
        return out[:, 0] if np.ndim(lam) == 0 else out


def test_router_curve_for_predictors_and_selectors() -> None:
    X, S, C = _clustered(n=300, seed=7)
    C = np.tile([1e-5, 1e-3, 5e-4, 2e-4], (300, 1))
    router = tuning.make_knn_router(tuning.KNNConfig(k=15)).fit(X[:200], S[:200], C[:200])
    cv = curves.router_curve(router, X[200:], S[200:], C[200:])
    ts, tc = curves.fill_missing(S[200:], C[200:])
    c_max = curves.cost_scale(tc)
    s_hat, c_hat = router.predict(X[200:])
    assert cv.auc == curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max).auc
    # A selection router has no predictions: its curve is traced on the dense grid.
    sel = curves.router_curve(_CheapestAboveLambda(50.0 / c_max), X[200:], S[200:], C[200:])
    assert sel.cost.size == 1000 and set(np.round(sel.cost / c_max, 6)) == {0.01, 1.0}


# --------------------------------------------------------------------------- tuning: fast grid, LOO
def test_grid_predictions_equal_the_routers_and_the_reference_aggregate() -> None:
    X, S, C = _clustered(n=260, seed=4)
    S = np.nan_to_num(S, nan=0.0)  # full rows: shared neighbourhoods (partial rows: tests/test_per_model.py)
    idx, sim = search(X[:200], X[200:], 50)
    cfgs = tuning.knn_grid(50)
    assert any(c.shrinkage >= 1e6 for c in cfgs)  # the best-single fallback is in the grid
    for cfg, (sh, ch) in zip(cfgs, tuning.grid_predictions(idx, sim, S[:200], C[:200], cfgs), strict=True):
        # the tuner scores exactly the predictions of the router it would deploy
        ks, kc = tuning.make_knn_router(cfg).fit(X[:200], S[:200], C[:200]).predict(X[200:])
        np.testing.assert_array_equal(sh, ks)
        np.testing.assert_array_equal(ch, kc)
        rs, rc = reference.aggregate(
            idx[:, : cfg.k], sim[:, : cfg.k], S[:200], C[:200], cfg.weighting, cfg.temperature, cfg.shrinkage
        )
        np.testing.assert_allclose(sh, rs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ch, rc, rtol=1e-5, atol=1e-9)


def _loop_aucs(idx, sim, S, cost_models, ts, tc, c_max, cfgs):  # type: ignore[no-untyped-def]
    """The tuner's per-configuration loop: aggregate, add the known cost, sweep, hull AUC."""
    return np.array([
        [curves.curve_from_predictions(sh, ch + add, ts, tc, c_max).auc
         for sh, ch in tuning.grid_predictions(idx, sim, S, table, cfgs)]
        for table, add in cost_models
    ])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_aucs_equal_the_per_config_loop_bit_for_bit(seed: int) -> None:
    # knnroute_core.tune_grid sums each weighting's neighbours once and reads every k and shrinkage off
    # those sums: the AUCs must be the very doubles of aggregate + sweep + hull per configuration.
    rng = np.random.default_rng(seed)
    X, S, C = _clustered(n=330, seed=10 + seed)
    S, C = S.copy(), C.copy()
    S[rng.random(S.shape) < 0.15] = np.nan  # missing cells: per-model sums skip them
    C[rng.random(C.shape) < 0.15] = np.nan
    X[7] = X[8]  # an exact duplicate (tied similarities)
    tr, va = slice(0, 270), slice(270, 330)
    cfgs = tuning.knn_grid(269)
    idx, sim = search(X[tr], X[va], 200)
    li, ls = tuning.loo_neighbours(X[tr], 200)
    idx, sim = np.concatenate([idx, li]), np.concatenate([sim, ls])
    ts, tc = curves.fill_missing(np.concatenate([S[va], S[tr]]), np.concatenate([C[va], C[tr]]))
    c_max = curves.cost_scale(tc)
    s32 = np.ascontiguousarray(S[tr], dtype=np.float32)
    c32 = np.ascontiguousarray(C[tr], dtype=np.float32)
    known = rng.random(ts.shape) * 0.3 * np.nanmean(C)
    r32 = tuning.residual_costs(c32, np.full(c32.shape, 0.2 * np.nanmean(C))).astype(np.float32)
    models = [(c32, 0.0), (r32, known)]
    got = tuning.grid_aucs(idx, sim, s32, models, ts, tc, c_max, cfgs)
    np.testing.assert_array_equal(got, _loop_aucs(idx, sim, s32, models, ts, tc, c_max, cfgs))
    # rows whose first similarity is not their largest (softmax then subtracts another maximum per k)
    sim2 = sim.copy()
    sim2[::3, 5] = sim2[::3, 0] + 0.05
    soft = [c for c in cfgs if c.weighting == "softmax"][:40] + [tuning.KNNConfig(3, "softmax", 0.07, 2.0)]
    got2 = tuning.grid_aucs(idx, sim2, s32, models[:1], ts, tc, c_max, soft)
    np.testing.assert_array_equal(got2, _loop_aucs(idx, sim2, s32, models[:1], ts, tc, c_max, soft))
    with pytest.raises(ValueError, match="neighbours were given"):
        tuning.grid_aucs(idx[:, :10], sim[:, :10], s32, models, ts, tc, c_max, cfgs)
    bad = idx.copy()
    bad[0, 0] = 270
    with pytest.raises(ValueError, match="out of range"):
        tuning.grid_aucs(bad, sim, s32, models, ts, tc, c_max, cfgs[:3])


def test_loo_neighbours_match_brute_force_without_self() -> None:
    X, _, _ = _clustered(n=120, seed=5)
    X = np.concatenate([X, X[:3]])  # exact duplicates: a row's twin may outrank the row itself
    idx, sim = tuning.loo_neighbours(X, 10)
    n = X.shape[0]
    s = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    for i in range(n):
        assert i not in idx[i]
        np.testing.assert_allclose(sim[i], np.sort(s[i])[::-1][:10], atol=1e-5)
    with pytest.raises(ValueError, match="leave-one-out"):
        tuning.loo_neighbours(X, n)


def test_tuning_pool_with_and_without_loo() -> None:
    X, S, C = _clustered(seed=6)
    S = np.nan_to_num(S, nan=0.0)  # full rows: shared neighbourhoods (partial rows: tests/test_per_model.py)
    tr, va = slice(0, 280), slice(280, 340)
    plain = tuning.tune_knn(X[tr], S[tr], C[tr], X[va], S[va], C[va], loo=False)
    pooled = tuning.tune_knn(X[tr], S[tr], C[tr], X[va], S[va], C[va])
    # without LOO the score of a config is its validation AUC: recompute one independently
    cfg = tuning.KNNConfig(k=20, weighting="similarity", shrinkage=5.0)
    row = next(r for r in plain.table if tuning.KNNConfig(**{k: r[k] for k in cfg.kwargs()}) == cfg)
    sh, ch = tuning.make_knn_router(cfg).fit(X[tr], S[tr], C[tr]).predict(X[va])
    ts, tc = curves.fill_missing(S[va], C[va])
    want = curves.curve_from_predictions(sh, ch, ts, tc, curves.cost_scale(tc)).auc
    assert row["val_auc"] == pytest.approx(want, abs=1e-6)
    assert pooled.val_auc == max(r["val_auc"] for r in pooled.table)
    assert max(c["k"] for c in pooled.table) <= 279  # leave-one-out sees n_train - 1 prompts


# --------------------------------------------------------------------------- cross-task (ID / OOD)
def test_ood_fit_once_equals_run_one_on_the_stacked_pair() -> None:
    from knnroute.evaluate import ood

    X, S, C = _clustered(n=500, seed=7)
    a = EvalData("taskA", X[:260], S[:260], C[:260], ["m0", "m1", "m2", "m3"])
    b = EvalData("taskB", X[260:], S[260:], C[260:], ["m0", "m1", "m2", "m3"])
    recs = ood.evaluate_ood([a, b], ["oracle", "best-single", "knn-10", "knn-tuned"], [0, 1], progress=False)
    got = {(r["train_task"], r["test_task"], r["router"], r["seed"]): r for r in recs}
    assert len(got) == len(recs) == 2 * 2 * 4 * 2
    for s in (0, 1):
        for tr_d, te_d in ((a, b), (b, a)):
            data, split = ood.cross_task_pair(tr_d, te_d, s)
            for router in ("knn-10", "knn-tuned", "oracle"):
                ref = run_one(data, router, s, split=split).records[0]
                rec = got[(tr_d.name, te_d.name, router, s)]
                assert rec["auc"] == pytest.approx(ref["auc"], abs=1e-9) and rec["id"] is False
        # the ID pair is the plain per-dataset run
        assert got[("taskA", "taskA", "knn-10", s)]["auc"] == pytest.approx(run_one(a, "knn-10", s).records[0]["auc"])
    summ = {r["router"]: r for r in ood.summarise_ood(recs)}
    assert summ["oracle"]["id_mean"] == pytest.approx(summ["oracle"]["ood_mean"])  # test sets only
    assert summ["knn-10"]["n_id_pairs"] == 2 and summ["knn-10"]["n_ood_pairs"] == 2
    assert "knn-tuned" in ood.format_ood(list(summ.values()), recs)
    c = EvalData("taskC", X[:50], S[:50, :3], C[:50, :3], ["m0", "m1", "m2"])
    with pytest.raises(ValueError, match="different models"):
        ood.evaluate_ood([a, c], ["knn-10"], [0], progress=False)


def test_ood_on_processes_equals_serial() -> None:
    """``knnroute eval --ood --jobs 2``: the cross-task records of the serial loop, in its order."""
    pytest.importorskip("sklearn")
    from knnroute.evaluate import ood

    X, S, C = _clustered(n=500, seed=8)
    a = EvalData("taskA", X[:260], S[:260], C[:260], ["m0", "m1", "m2", "m3"])
    b = EvalData("taskB", X[260:], S[260:], C[260:], ["m0", "m1", "m2", "m3"])
    routers = ["oracle", "random", "best-single", "knn-10", "knn-tuned", "linear"]
    serial = ood.evaluate_ood([a, b], routers, [0, 1], progress=False)
    pooled = ood.evaluate_ood([a, b], routers, [0, 1], progress=False, jobs=2)
    assert len(serial) == 2 * 2 * 6 * 2 and _strip_timing(pooled) == _strip_timing(serial)
    assert {(r["train_task"], r["test_task"], r["id"]) for r in pooled} == {
        ("taskA", "taskA", True), ("taskA", "taskB", False), ("taskB", "taskA", False), ("taskB", "taskB", True)}


def test_records_carry_fit_and_route_times() -> None:
    from knnroute.evaluate import report

    d = _eval_data()
    rec = run_one(d, "knn-10", 0).records[0]
    assert rec["route_seconds"] >= 0 and rec["fit_seconds"] >= 0 and rec["route_us_per_query"] >= 0
    summ = report.summarise([rec, run_one(d, "oracle", 0).records[0]])
    table = report.format_timing(summ)
    assert "knn-10" in table and "oracle" not in table


def _no_timing(x):  # type: ignore[no-untyped-def]
    if isinstance(x, dict):
        return {k: _no_timing(v) for k, v in x.items() if not (k.endswith("_seconds") or k == "route_us_per_query")}
    if isinstance(x, list):
        return [_no_timing(v) for v in x]
    return _nan_safe(x)


def test_process_pool_grid_equals_serial() -> None:
    """``knnroute eval --jobs 2``: the same records (timings aside), curves and tuning tables as the serial loop,
    in the serial order, for kNN rows, a scikit-learn baseline and a selection router."""
    pytest.importorskip("sklearn")
    from knnroute.commands.eval import load_eval_data
    from knnroute.evaluate.parallel import evaluate_processes
    from knnroute.evaluate.runner import evaluate

    data = [ed for ed, _ in load_eval_data("demo", progress=False)]
    routers = ["oracle", "random", "best-single", "single", "knn-10", "knn-tuned", "linear", "knn-vote-10"]
    local = evaluate(data, routers, [0, 1], progress=False)
    pooled = evaluate_processes(data, routers, [0, 1], jobs=2, progress=False)
    assert [_no_timing(r) for r in pooled.records] == [_no_timing(r) for r in local.records]
    assert list(pooled.curves) == list(local.curves)
    for key, cv in local.curves.items():
        assert pooled.curves[key].to_dict(points=True) == cv.to_dict(points=True), key
    assert pooled.extras == local.extras


def test_process_pool_names_the_failing_cell() -> None:
    from knnroute.evaluate.parallel import evaluate_processes

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ok = EvalData("ok", X, rng.uniform(size=(40, 3)), rng.uniform(0.1, 1, size=(40, 3)), ["a", "b", "c"])
    # a ValueError in a worker is a user error: it stays a ValueError (one line from the CLI), naming the cell
    with pytest.raises(ValueError, match="dataset='ok' router='nope' seed=0.*unknown router"):
        evaluate_processes([ok], ["oracle", "nope"], [0], jobs=2, progress=False)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        evaluate_processes([ok], ["oracle"], [0], jobs=0, progress=False)
