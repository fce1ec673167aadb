"""experiments.quality_stack (issue 21 experiment): the exact ridge leave-one-out and the blend's end points."""

from __future__ import annotations

import numpy as np

from experiments.quality_stack import ALPHAS, blend_auc, ridge_loo
from knnroute.routers import curves as _curves
from knnroute.routers.linear import LinearRouter


def _problem(seed: int = 0, n: int = 60, d: int = 8, m: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = (rng.random((n, m)) < 0.5 + 0.3 * X[:, :m]).astype(np.float64)
    C = np.abs(rng.normal(1e-3, 2e-4, size=(n, m))) * np.arange(1, m + 1)
    return X, S, C


def test_ridge_loo_equals_refitting_without_the_row_also_with_missing_scores():
    X, S, C = _problem()
    S[[3, 7], 1] = np.nan  # model 1's score is missing on two rows: its own observed-row group
    lin = LinearRouter(alphas=(0.1, 1.0)).fit(X, S, C)
    loo_s, loo_c = ridge_loo(lin, X, S, C)
    for i in (0, 3, 11):
        keep = np.ones(len(X), dtype=bool)
        keep[i] = False
        for j in range(S.shape[1]):
            rows = keep & np.isfinite(S[:, j])
            ref = LinearRouter(alphas=(float(lin.alpha_score_[j]),)).fit(X[rows], S[rows][:, [j]], C[rows][:, [j]])
            expect = ref.predict(X[i : i + 1])[0][0, 0]
            if np.isfinite(S[i, j]):
                assert abs(loo_s[i, j] - expect) < 1e-9
            else:  # the row was not in the column's fit: its LOO prediction is the fitted one
                assert abs(loo_s[i, j] - lin.predict(X[i : i + 1])[0][0, j]) < 1e-9
        ref_c = LinearRouter(alphas=(float(lin.alpha_cost_[0]),)).fit(X[keep], S[keep][:, [0]], C[keep][:, [0]])
        assert abs(loo_c[i, 0] - max(ref_c.predict(X[i : i + 1])[1][0, 0], 0.0)) < 1e-12


def test_blend_end_points_are_the_two_routers():
    X, S, C = _problem(1)
    rng = np.random.default_rng(2)
    sk, sr = rng.random(S.shape), rng.random(S.shape)
    ck, cr = C * rng.uniform(0.8, 1.2, C.shape), C * rng.uniform(0.8, 1.2, C.shape)
    c_max = _curves.cost_scale(C)
    aucs = blend_auc(sk, ck, sr, cr, S, C, c_max)
    assert ALPHAS[0] == 1.0 and ALPHAS[-1] == 0.0 and len(aucs) == len(ALPHAS)
    assert aucs[0] == _curves.curve_from_predictions(sk, ck, S, C, c_max).auc
    assert aucs[-1] == _curves.curve_from_predictions(sr, cr, S, C, c_max).auc
    # score-only blending keeps the kNN cost at every weight
    assert blend_auc(sk, ck, sr, cr, S, C, c_max, blend_cost=False)[-1] == (
        _curves.curve_from_predictions(sr, ck, S, C, c_max).auc
    )
