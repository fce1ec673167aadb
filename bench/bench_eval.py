"""Full evaluation: 1,000 test x 10,000 support x 11 models, exact lambda sweep + AUC, against NumPy's
dense-grid protocol (1,000 lambdas; tests/reference.py).

Two timings per side:
- end-to-end: kNN predictions (search k = 100 + aggregation) for the test prompts, then curve, hull and AUC;
- curve only: from given predictions (s_hat, c_hat) and true outcomes to the AUC (the evaluation step).
``ours-int8`` is the same router with int8 storage: its batch search (one-digit int8 queries on VNNI over
shared row blocks, then an exact float32 re-rank) returns the float32 neighbours exactly, so its
predictions and AUC are identical to ``ours`` (checked here).
"""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from bench.conftest import QUICK, clustered, outcomes, record, run_bench

N_SUPPORT = 10000 if not QUICK else 2000
N_TEST = 1000 if not QUICK else 200
K = 100
_cache: dict = {}


def problem():
    if not _cache:
        X = clustered(N_SUPPORT)
        S, C = outcomes(N_SUPPORT)
        Xt = clustered(N_TEST, seed=12345, centers=max(16, min(2000, N_SUPPORT // 500)))
        rng = np.random.default_rng(3)
        Xt = X[rng.integers(0, N_SUPPORT, N_TEST)] + 0.6 * Xt
        Xt = np.ascontiguousarray(Xt / np.linalg.norm(Xt, axis=1, keepdims=True), dtype=np.float32)
        TS, TC = outcomes(N_TEST, seed=77)
        TS = TS.astype(np.float64)
        TC = TC.astype(np.float64)
        c_max = float(TC.mean(0).max())
        _cache.update(X=X, S=S, C=C, Xt=Xt, TS=TS, TC=TC, c_max=c_max)
    return _cache


def ours_curve(sh, ch, TS, TC, c_max):
    lams, mc, ms = kc.sweep(sh, ch, TS, TC)
    return kc.hull_auc(mc, 100.0 * ms, c_max)


def numpy_predict(X, S, C, Xt):
    sims = Xt @ X.T
    idx = np.argpartition(-sims, K, axis=1)[:, :K]
    return S[idx].mean(1), C[idx].mean(1)


def numpy_curve(sh, ch, TS, TC, c_max):
    from tests.reference import dense_grid_auc

    return dense_grid_auc(sh, ch, TS, TC, c_max, n=1000)


@pytest.mark.parametrize("stage", ["curve", "end-to-end"])
@pytest.mark.parametrize("impl", ["ours", "ours-int8", "numpy-grid"])
def test_full_evaluation(benchmark, bounds, impl, stage):
    from threadpoolctl import threadpool_limits

    P = problem()
    X, S, C, Xt, TS, TC, c_max = (P[k] for k in ("X", "S", "C", "Xt", "TS", "TC", "c_max"))
    r = kc.Router(X, S, C, k=K, precision="int8" if impl == "ours-int8" else "f32")
    sh, ch = r.predict(Xt)
    if impl == "ours-int8":
        sh32, ch32 = kc.Router(X, S, C, k=K).predict(Xt)
        assert np.array_equal(sh, sh32) and np.array_equal(ch, ch32), "int8 predictions differ from f32"
    with threadpool_limits(limits=2):
        if impl.startswith("ours"):
            if stage == "curve":
                fn = lambda: ours_curve(sh, ch, TS, TC, c_max)  # noqa: E731
            else:
                fn = lambda: ours_curve(*r.predict(Xt), TS, TC, c_max)  # noqa: E731
        else:
            if stage == "curve":
                fn = lambda: numpy_curve(sh.astype(np.float64), ch.astype(np.float64), TS, TC, c_max)  # noqa: E731
            else:
                fn = lambda: numpy_curve(*numpy_predict(X, S, C, Xt), TS, TC, c_max)  # noqa: E731
        auc = fn()
        times = run_bench(benchmark, fn, rounds=15 if not QUICK else 3, warmup=1)
    record(f"eval/{stage}/test={N_TEST}/support={N_SUPPORT}/M=11", impl, times, auc=float(auc))
