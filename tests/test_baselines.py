"""Learned baselines (knnroute.routers.linear / mlp / torch_routers / selection / registry / base).

Interface checks on a small synthetic problem (shapes, dtypes, not-fitted errors, determinism, NaN cells,
tie rule), the closed-form ridge against scikit-learn, the neighbour helper against brute force, and a
real-data check: on RouterBench ARC-C (MiniLM embeddings) every router beats the Random router.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from knnroute.routers import selection as sel
from knnroute.routers.base import NotFittedError, route_predictions
from knnroute.routers.linear import LinearRouter
from knnroute.routers.neighbours import neighbours
from knnroute.routers.registry import BASELINE_FACTORIES, SELECTION_FACTORIES

HAS_TORCH = importlib.util.find_spec("torch") is not None
TORCH_NAMES = {"linear-mf", "mlp-mf", "graph-10", "graph-100", "attn-10", "attn-100", "dattn-10", "dattn-100"}
PAPER_NAMES = [
    "linear",
    "linear-mf",
    "mlp",
    "mlp-mf",
    "graph-10",
    "graph-100",
    "attn-10",
    "attn-100",
    "dattn-10",
    "dattn-100",
]

# small, fast settings for the synthetic interface tests (the defaults are for real data)
FAST = {
    "mlp": {"max_iter": 5},
    "linear-mf": {"max_epochs": 3, "batch_size": 32},
    "mlp-mf": {"max_epochs": 3, "batch_size": 32},
    "graph-10": {"max_epochs": 2, "batch_size": 32},
    "graph-100": {"max_epochs": 2, "batch_size": 32},
    "attn-10": {"max_epochs": 2, "batch_size": 32},
    "attn-100": {"max_epochs": 2, "batch_size": 32},
    "dattn-10": {"max_epochs": 2, "batch_size": 32},
    "dattn-100": {"max_epochs": 2, "batch_size": 32},
    "mlp-clf": {"max_iter": 5},
}


def _needs_torch(name: str) -> None:
    if name in TORCH_NAMES and not HAS_TORCH:
        pytest.skip("torch extra not installed (pip install '.[torch]' in the knnroute checkout)")


def make_problem(n: int = 150, d: int = 12, M: int = 4, seed: int = 0, nan_frac: float = 0.03):
    """Unit-norm embeddings, 0/1 scores with a linear signal, positive per-model costs, some NaN cells."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    logits = X @ rng.normal(size=(d, M)) * 3 + np.linspace(-0.5, 1.0, M)
    S = (rng.random((n, M)) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    C = np.geomspace(1e-5, 1e-3, M) * np.exp(0.3 * rng.normal(size=(n, M)))
    S[rng.random((n, M)) < nan_frac] = np.nan
    C[rng.random((n, M)) < nan_frac] = np.nan
    return X, S, C


@pytest.fixture(scope="module")
def problem():
    X, S, C = make_problem()
    return {
        "X": X[:100],
        "S": S[:100],
        "C": C[:100],
        "Xv": X[100:130],
        "Sv": S[100:130],
        "Cv": C[100:130],
        "Xt": X[130:],
        "St": S[130:],
        "Ct": C[130:],
    }


def _fit(name: str, p: dict, seed: int = 0, with_val: bool = True, **kw):
    factory = BASELINE_FACTORIES.get(name) or SELECTION_FACTORIES[name]
    router = factory(random_state=seed, **{**FAST.get(name, {}), **kw})
    val = {"X_val": p["Xv"], "scores_val": p["Sv"], "costs_val": p["Cv"]} if with_val else {}
    return router.fit(p["X"], p["S"], p["C"], model_names=["a", "b", "c", "d"], **val)


# ---------------------------------------------------------------- registry and imports


def test_registry_names() -> None:
    assert list(BASELINE_FACTORIES) == PAPER_NAMES
    assert set(SELECTION_FACTORIES) == {"knn-vote-10", "knn-vote-100", "logreg", "mlp-clf"}
    assert BASELINE_FACTORIES["linear"]().__class__.__name__ == "LinearRouter"
    assert BASELINE_FACTORIES["mlp"](alpha=0.1).alpha == 0.1  # keyword overrides reach the constructor
    if HAS_TORCH:
        assert BASELINE_FACTORIES["graph-100"]().k == 100
        assert BASELINE_FACTORIES["dattn-10"](k=5).k == 5
    assert SELECTION_FACTORIES["knn-vote-10"]().k == 10


def test_importing_does_not_import_heavy_dependencies() -> None:
    code = (
        "import sys; import knnroute.routers, knnroute.routers.registry, knnroute.routers.linear, "
        "knnroute.routers.mlp, knnroute.routers.torch_routers, knnroute.routers.torch_base, "
        "knnroute.routers.selection, knnroute.routers.tuned; "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from knnroute.routers import torch_base as tb
    from knnroute.routers import torch_routers as tr

    monkeypatch.setattr(tb.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"pip install '\.\[torch\]'"):
        tr.GraphRouter(k=10)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install '\.\[torch\]'"):
        tb._import_torch()


def test_old_module_paths_still_import() -> None:
    with pytest.warns(DeprecationWarning, match="knnroute.routers.baselines is deprecated"):
        importlib.reload(importlib.import_module("knnroute.routers.baselines"))
    with pytest.warns(DeprecationWarning, match="knnroute.evaluate.tuning is deprecated"):
        tuning = importlib.reload(importlib.import_module("knnroute.evaluate.tuning"))
    from knnroute.routers.tuned import TunedKNNRouter

    assert tuning.TunedKNNRouter is TunedKNNRouter
    if HAS_TORCH:  # routers pickled before the networks moved to torch_nets still resolve them
        from knnroute.routers import torch_nets, torch_routers

        assert torch_routers.GraphNet is torch_nets.GraphNet


# ---------------------------------------------------------------- Router protocol


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_protocol_shapes_dtypes_and_nan(name: str, problem: dict) -> None:
    _needs_torch(name)
    r = _fit(name, problem)
    assert r.selection is False
    assert r.n_features_in_ == problem["X"].shape[1] and r.model_names_ == ["a", "b", "c", "d"]
    s_hat, c_hat = r.predict(problem["Xt"])
    n = problem["Xt"].shape[0]
    for a in (s_hat, c_hat):
        assert a.shape == (n, 4) and a.dtype == np.float64 and np.isfinite(a).all()
    assert (c_hat >= 0).all()
    # predicted costs are in dollars: the right order of magnitude, not z-scores
    assert 1e-7 < np.median(c_hat) < 1e-1
    one = r.route(problem["Xt"], 0.0)
    assert one.shape == (n,) and one.dtype == np.int64 and ((one >= 0) & (one < 4)).all()
    lams = np.array([0.0, 1e2, 1e3, 1e6])
    many = r.route(problem["Xt"], lams)
    assert many.shape == (n, 4) and many.dtype == np.int64
    np.testing.assert_array_equal(many[:, 0], one)
    np.testing.assert_array_equal(many, route_predictions(s_hat, c_hat, lams))
    # huge lambda: the cheapest predicted model
    np.testing.assert_array_equal(many[:, -1], np.argmin(c_hat, axis=1))
    # no validation data: internal hold-out / leave-one-out path
    s2, c2 = _fit(name, problem, with_val=False).predict(problem["Xt"])
    assert np.isfinite(s2).all() and np.isfinite(c2).all()


@pytest.mark.parametrize("name", PAPER_NAMES + list(SELECTION_FACTORIES))
def test_not_fitted_error(name: str, problem: dict) -> None:
    _needs_torch(name)
    r = (BASELINE_FACTORIES.get(name) or SELECTION_FACTORIES[name])()
    with pytest.raises(NotFittedError, match="fit"):
        r.route(problem["Xt"], 0.0)
    if hasattr(r, "predict"):
        with pytest.raises(ValueError, match="fit"):
            r.predict(problem["Xt"])


@pytest.mark.parametrize(
    "name", ["mlp", "linear-mf", "mlp-mf", "graph-10", "attn-10", "dattn-100", "mlp-clf", "logreg"]
)
def test_same_seed_same_predictions(name: str, problem: dict) -> None:
    _needs_torch(name)
    a, b = _fit(name, problem, seed=3), _fit(name, problem, seed=3)
    if getattr(a, "selection", False):
        lams = np.array([0.0, 300.0, 3000.0])
        np.testing.assert_array_equal(a.route(problem["Xt"], lams), b.route(problem["Xt"], lams))
    else:
        for x, y in zip(a.predict(problem["Xt"]), b.predict(problem["Xt"]), strict=False):
            np.testing.assert_array_equal(x, y)


@pytest.mark.skipif(not HAS_TORCH, reason="torch extra not installed")
def test_torch_router_pickles_and_leaves_global_torch_state(problem: dict) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    r = _fit("attn-10", problem)
    assert torch.rand(1).item() == expected_next.item()  # fit ran on a forked RNG
    assert torch.get_num_threads() == threads
    r2 = pickle.loads(pickle.dumps(r))
    for x, y in zip(r.predict(problem["Xt"]), r2.predict(problem["Xt"]), strict=False):
        np.testing.assert_array_equal(x, y)


def test_fit_input_errors(problem: dict) -> None:
    r = LinearRouter()
    with pytest.raises(ValueError, match="X_val, scores_val and costs_val"):
        r.fit(problem["X"], problem["S"], problem["C"], X_val=problem["Xv"])
    with pytest.raises(ValueError, match="shape"):
        r.fit(problem["X"], problem["S"][:, :3], problem["C"])
    with pytest.raises(ValueError, match=">= 0"):
        r.fit(problem["X"], problem["S"], -np.abs(problem["C"]))
    with pytest.raises(ValueError, match="features"):
        r.fit(problem["X"], problem["S"], problem["C"]).predict(problem["Xt"][:, :5])
    with pytest.raises(ValueError, match="lam"):
        r.route(problem["Xt"], -1.0)


# ---------------------------------------------------------------- tie rule


def test_route_predictions_tie_rule() -> None:
    # values exact in binary floating point, so the ties below are exact
    s = np.array([[0.5, 0.5, 0.5], [0.75, 0.5, 0.75], [0.25, 0.25, 0.125]])
    c = np.array([[3.0, 1.0, 1.0], [2.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    # lam = 0: row 0 ties three ways -> cheapest (1, 2 cost 1) -> lower index 1; row 1 ties 0 and 2 at the
    # same cost -> 0; row 2 ties 0 and 1 at the same cost -> 0
    np.testing.assert_array_equal(route_predictions(s, c, 0.0), [1, 0, 0])
    # lam = 0.25: row 1 ties all three at 0.25 -> the cheapest, 1; row 2: model 2 (0.125) beats 0 (0.0)
    np.testing.assert_array_equal(route_predictions(s, c, [0.0, 0.25]), [[1, 1], [0, 1], [0, 2]])


def test_router_ties_go_to_cheaper_model() -> None:
    # identical constant scores: every model predicts the same score, so lam = 0 is an exact tie
    X, _, C = make_problem(nan_frac=0.0)
    S = np.full(C.shape, 0.5)
    r = LinearRouter().fit(X, S, C)
    s_hat, c_hat = r.predict(X)
    assert np.all(s_hat == s_hat[:, :1])
    np.testing.assert_array_equal(r.route(X, 0.0), np.argmin(c_hat, axis=1))


# ---------------------------------------------------------------- Linear: same estimator as sklearn


def test_linear_matches_sklearn_ridge(problem: dict) -> None:
    from sklearn.linear_model import Ridge, RidgeCV

    X, S, C = problem["X"].astype(np.float64), problem["S"], problem["C"]
    alphas = (1e-2, 1e-1, 1.0, 10.0)
    r = LinearRouter(alphas=alphas).fit(
        X, S, C, X_val=problem["Xv"], scores_val=problem["Sv"], costs_val=problem["Cv"]
    )
    r_loo = LinearRouter(alphas=alphas).fit(X, S, C)
    for m in range(S.shape[1]):
        rows = np.isfinite(S[:, m])
        ref = Ridge(alpha=r.alpha_score_[m]).fit(X[rows], S[rows, m])
        np.testing.assert_allclose(r.coef_score_[m], ref.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(r.intercept_score_[m], ref.intercept_, rtol=1e-8, atol=1e-10)
        # the validation choice is the grid point with the lowest validation MSE
        vr = np.isfinite(problem["Sv"][:, m])
        mse = [
            np.mean(
                (Ridge(alpha=a).fit(X[rows], S[rows, m]).predict(problem["Xv"][vr]) - problem["Sv"][vr, m])
                ** 2
            )
            for a in alphas
        ]
        assert r.alpha_score_[m] == alphas[int(np.argmin(mse))]
        cv = RidgeCV(alphas=alphas).fit(X[rows], S[rows, m])
        assert r_loo.alpha_score_[m] == cv.alpha_
        np.testing.assert_allclose(r_loo.coef_score_[m], cv.coef_, rtol=1e-7, atol=1e-10)
        # cost: a ridge fit of the dollars (z-scaling is linear, so the fit maps back exactly)
        rows_c = np.isfinite(C[:, m])
        ref_c = Ridge(alpha=r.alpha_cost_[m]).fit(X[rows_c], C[rows_c, m])
        np.testing.assert_allclose(r.coef_cost_[m], ref_c.coef_, rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------- neighbours


def test_neighbours_exact_and_leave_one_out() -> None:
    X, _, _ = make_problem(n=80, d=7)
    Q = make_problem(n=9, d=7, seed=1)[0]
    sims = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    idx, sim = neighbours(X, Q, 5, exclude_self=False)
    assert idx.dtype == np.int64 and sim.dtype == np.float32 and idx.shape == (9, 5)
    np.testing.assert_array_equal(idx, np.argsort(-sims, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(sim, np.take_along_axis(sims, idx, axis=1), rtol=1e-5, atol=1e-6)
    idx, _ = neighbours(X, X, 79, exclude_self=True)
    assert not (idx == np.arange(80)[:, None]).any()
    assert all(len(set(row)) == 79 for row in idx.tolist())
    with pytest.raises(ValueError, match="k must be"):
        neighbours(X, X, 80, exclude_self=True)


# ---------------------------------------------------------------- selection routers


def test_best_model_labels_and_lambdas() -> None:
    S = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, np.nan], [np.nan, np.nan, np.nan], [1.0, 1.0, 1.0]])
    C = np.array([[2.0, 1.0, 0.5], [1.0, 3.0, 0.1], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(sel.best_model_labels(S, C, 0.0), [1, 1, -1, 0])
    np.testing.assert_array_equal(sel.best_model_labels(S, C, 0.6), [1, 0, -1, 0])
    # c_max = the largest per-model mean cost (model 1: 1.5)
    np.testing.assert_allclose(sel.appendix_d_lambdas(C), np.array([1.0, 0.5, 0.1]) / 1.5)
    np.testing.assert_allclose(sel.appendix_d_lambdas(C, score_scale=100), np.array([1.0, 0.5, 0.1]) / 150)
    assert sel.mean_utility([1, 0, 0, 2], S, C, 0.0) == pytest.approx(0.5)  # NaN score counts as 0


@pytest.mark.parametrize("name", list(SELECTION_FACTORIES))
def test_selection_protocol(name: str, problem: dict) -> None:
    r = _fit(name, problem)
    assert r.selection is True
    n = problem["Xt"].shape[0]
    lams = np.array([0.0, 300.0, 3000.0, 1e7])
    out = r.route(problem["Xt"], lams)
    assert out.shape == (n, 4) and out.dtype == np.int64 and ((out >= 0) & (out < 4)).all()
    one = r.route(problem["Xt"], 300.0)
    assert one.shape == (n,)
    np.testing.assert_array_equal(one, out[:, 1])
    # at a huge lambda nearly every training label is the cheapest model, and so is nearly every pick
    cheapest = int(np.argmin(r.cost_mean_))
    assert np.mean(out[:, -1] == cheapest) >= 0.9
    # lambdas with the same training/validation labels share one classifier
    assert r.classifiers_[1e7] is r._classifier(2e7)


def test_knn_vote_is_a_majority_vote(problem: dict) -> None:
    r = sel.KNNVoteSelector(k=7).fit(problem["X"], problem["S"], problem["C"])
    lam = 300.0
    labels = sel.best_model_labels(problem["S"], problem["C"], lam, r.cost_mean_)
    idx, _ = neighbours(problem["X"], problem["Xt"], 7, exclude_self=False)
    got = r.route(problem["Xt"], lam)
    for i in range(idx.shape[0]):
        votes = np.bincount(labels[idx[i]][labels[idx[i]] >= 0], minlength=4)
        winners = np.flatnonzero(votes == votes.max())
        assert got[i] == winners[np.argmin(r.cost_mean_[winners])]


def test_selection_one_class_and_lams_at_fit(problem: dict) -> None:
    # every model always right and costs fixed per model: the cheapest is every prompt's label
    S = np.ones_like(problem["S"])
    C = np.tile(np.array([3e-4, 1e-4, 2e-4, 5e-4]), (S.shape[0], 1))
    for r in (sel.LogisticSelector(), sel.MLPSelector(max_iter=3, random_state=0), sel.KNNVoteSelector(k=5)):
        r.fit(problem["X"], S, C, lams=[0.0, 10.0])
        assert set(r.classifiers_) == {0.0, 10.0}  # trained at fit
        np.testing.assert_array_equal(r.route(problem["Xt"], [0.0, 10.0]), 1)
    # a single candidate model
    m = sel.MLPSelector(max_iter=3, random_state=0).fit(problem["X"], S[:, :1], C[:, :1])
    np.testing.assert_array_equal(m.route(problem["Xt"], 1.0), 0)


# ---------------------------------------------------------------- real data: beats Random


@pytest.fixture(scope="module")
def arc_c(real_data):
    embed = pytest.importorskip("knnroute.embed", reason="knnroute.embed (MiniLM embeddings) not available")
    from knnroute.data import load_dataset

    try:
        dsets = {d.name: d for d in load_dataset(real_data / "routerbench-0shot-subset")}
        ds = embed.embed_dataset(dsets["arc_challenge"], progress=False)
    except (ImportError, OSError) as exc:  # no sentence-transformers / no bundled model
        pytest.skip(f"cannot embed RouterBench ARC-C with MiniLM: {exc}")
    split = np.asarray(ds.split)
    rows = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    return ds, rows


def _utility_curve(picks: np.ndarray, S: np.ndarray, C: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Mean true utility (missing score = 0) of the picks at each lambda."""
    return np.array([sel.mean_utility(picks[:, j], S, C, lam) for j, lam in enumerate(lams)])


@pytest.mark.realdata
@pytest.mark.embed
@pytest.mark.slow
def test_real_data_every_router_beats_random(arc_c) -> None:
    ds, rows = arc_c
    X = ds.embeddings
    tr, va, te = rows["train"], rows["val"], rows["test"]
    S_te, C_te = ds.scores[te], ds.costs[te]
    c_max = float(np.nanmax(np.nanmean(ds.costs[tr], axis=0)))
    lams = np.array([0.0, 0.1, 0.5, 1.0, 3.0]) / c_max  # includes the appendix-D settings
    # Random: the expected utility of a uniform pick (every model equally likely)
    Sf = np.nan_to_num(S_te, nan=0.0)
    Cf = np.where(np.isfinite(C_te), C_te, np.nanmean(ds.costs[tr], axis=0))
    random_u = np.array([np.mean(Sf - lam * Cf) for lam in lams])
    # few epochs and k <= 10 keep this under a minute on 2 cores; the k=100 variants share the code
    quick = {
        "mlp": {"max_iter": 15},
        "linear-mf": {"max_epochs": 15},
        "mlp-mf": {"max_epochs": 15},
        "graph-10": {"max_epochs": 6},
        "attn-10": {"max_epochs": 6},
        "dattn-10": {"max_epochs": 6},
        "mlp-clf": {"max_iter": 15},
    }
    names = [
        "linear",
        "mlp",
        "linear-mf",
        "mlp-mf",
        "graph-10",
        "attn-10",
        "dattn-10",
        "knn-vote-10",
        "logreg",
        "mlp-clf",
    ]
    results = {}
    for name in names:
        if name in TORCH_NAMES and not HAS_TORCH:
            continue
        factory = BASELINE_FACTORIES.get(name) or SELECTION_FACTORIES[name]
        r = factory(random_state=0, **quick.get(name, {}))
        r.fit(
            X[tr],
            ds.scores[tr],
            ds.costs[tr],
            model_names=ds.model_names,
            X_val=X[va],
            scores_val=ds.scores[va],
            costs_val=ds.costs[va],
        )
        u = _utility_curve(r.route(X[te], lams), S_te, C_te, lams)
        results[name] = u
        if getattr(r, "selection", False):
            # The classification form learns hard labels "the best model at this lambda", ties to the
            # cheaper model. On ARC-C (0/1 scores) that is mostly the cheapest model that is right, so a
            # selector mostly answers the cheapest model: it beats Random where cost matters (the low-cost
            # setting lam = 1 / c_max) and on the mean of the three appendix-D settings, but not at
            # lam = 0, where a uniform pick's mean score is higher (the paper calls this protocol
            # misleading for the same reason).
            assert u[3] > random_u[3] + 0.05, (name, u, random_u)
            assert u[1:4].mean() > random_u[1:4].mean(), (name, u, random_u)
        else:
            # better than a random pick at every trade-off, and by a clear margin on average
            assert (u > random_u).all(), (name, u, random_u)
            assert (u - random_u).mean() > 0.05, (name, u - random_u)
    assert len(results) >= 4


@pytest.mark.skipif(not HAS_TORCH, reason="torch extra not installed")
@pytest.mark.parametrize("name", ["linear-mf", "graph-10"])
def test_max_train_rows_caps_the_training_targets(name: str, problem: dict) -> None:
    capped = _fit(name, problem, max_train_rows=40)
    assert capped.n_train_rows_ == 40
    full = _fit(name, problem, max_train_rows=None)
    assert full.n_train_rows_ == problem["X"].shape[0]
    if capped.k_ is not None:  # the support set is never subsampled
        assert capped.support_X_.shape[0] == problem["X"].shape[0] and capped.k_ == full.k_
    s_hat, c_hat = capped.predict(problem["Xt"])
    assert np.isfinite(s_hat).all() and np.isfinite(c_hat).all()
    # a cap at or above the training size changes nothing
    big = _fit(name, problem, max_train_rows=10_000)
    for x, y in zip(big.predict(problem["Xt"]), full.predict(problem["Xt"]), strict=False):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["logreg", "mlp-clf"])
def test_selector_max_train_rows(name: str, problem: dict) -> None:
    capped = _fit(name, problem, max_train_rows=60)
    assert capped.X_.shape[0] == 60 and capped.val_[0].shape[0] == problem["Xv"].shape[0]
    rows = [int(np.flatnonzero((problem["X"] == x).all(axis=1))[0]) for x in capped.X_]
    np.testing.assert_array_equal(capped.scores_, problem["S"][rows])  # rows kept with their outcomes
    full = _fit(name, problem, max_train_rows=None)
    assert full.X_.shape[0] == problem["X"].shape[0]
    lams = np.array([0.0, 300.0, 3000.0])
    np.testing.assert_array_equal(  # under the cap nothing changes
        _fit(name, problem, max_train_rows=1000).route(problem["Xt"], lams), full.route(problem["Xt"], lams)
    )
