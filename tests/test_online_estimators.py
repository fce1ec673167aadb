"""The NumPy estimators of bench/online_estimators.py (issue 29, third pass): the two that reproduce the core
(per-model lists, common radius) against knnroute_core, and the prototypes' full-information identity."""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from bench.online_estimators import ESTIMATORS, NpRouter


def _problem(seed: int = 0, n: int = 400, d: int = 16, M: int = 4, n_full: int = 120):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = (rng.random((n, M)) < 0.6).astype(np.float64)
    C = rng.random((n, M)) * 1e-3
    one = rng.integers(M, size=n)
    mask = np.arange(M)[None, :] != one[:, None]
    mask[:n_full] = False
    S[mask] = np.nan
    C[mask] = np.nan
    Q = rng.standard_normal((30, d)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return X, S, C, Q


@pytest.mark.parametrize("radius", [False, True])
def test_lists_and_radius_match_the_core(radius):
    X, S, C, Q = _problem()
    k = 20
    core = kc.Router(X, S.astype(np.float32), C.astype(np.float32), k, "uniform", 0.05, 0.0)
    core.common_radius = radius
    s_core, c_core = core.predict(Q, 0)
    r = NpRouter(X[:120], S[:120], C[:120], k, "radius" if radius else "lists", capacity=8)
    r.add(X[120:], S[120:], C[120:])  # grows past the capacity
    s_np, c_np = r.predict(Q)
    np.testing.assert_allclose(s_np, s_core, atol=1e-5)
    np.testing.assert_allclose(c_np, c_core, atol=1e-8)


@pytest.mark.parametrize("est", [e for e in ESTIMATORS if e.startswith("resid")])
def test_full_information_is_the_plain_knn_mean(est):
    """With every row full, the ``resid`` prototypes equal the core's uniform kNN (own list = k nearest of all, no
    difficulty difference, nothing imputed): the full-information router does not change."""
    X, S, C, Q = _problem(n_full=400)
    core = kc.Router(X, S.astype(np.float32), C.astype(np.float32), 25, "uniform", 0.05, 0.0)
    s_core, c_core = core.predict(Q, 0)
    s_np, c_np = NpRouter(X, S, C, 25, est, n0=30, w_imp=0.3).predict(Q)
    np.testing.assert_allclose(s_np, s_core, atol=1e-5)
    np.testing.assert_allclose(c_np, c_core, atol=1e-8)


def test_additive_full_information_shrinks_toward_the_local_difficulty():
    """``additive`` / ``impute``: (k mean + n0 (g + d)) / (k + n0), d = the mean residual of N's cells."""
    X, S, C, Q = _problem(n_full=400)
    r = NpRouter(X, S, C, 25, "additive", n0=5)
    s_np, _ = r.predict(Q[:1])
    sims = (Q[:1] @ X.T)[0]
    N = np.argsort(-sims)[:25]
    g = S.mean(axis=0)
    d = (S[N] - g).mean()
    np.testing.assert_allclose(s_np[0], (S[N].sum(axis=0) + 5 * (g + d)) / 30)


def test_local_imputation_follows_the_prediction_at_the_row():
    X, S, C, _ = _problem()
    r = NpRouter(X[:120], S[:120], C[:120], 20, "resid-limpute", n0=30, w_imp=0.3)
    x = X[200]
    det = r.route_one_detail(x, 0.0)
    s = np.full(S.shape[1], np.nan)
    c = np.full(S.shape[1], np.nan)
    s[2], c[2] = 1.0, 5e-4
    r.add(x[None, :], s[None, :], c[None, :])
    mu = det["s_hat"]
    want = np.clip(mu + r.bs[2] * (1.0 - mu[2]), r.lo_s, r.hi_s)
    want[2] = np.nan
    np.testing.assert_allclose(r.IS[120], want)
    assert np.isnan(r.IC[120, 2]) and not np.isnan(r.IC[120, [0, 1, 3]]).any()
    assert np.isnan(r.IS[:120]).all()  # fitted rows carry no imputed cells
