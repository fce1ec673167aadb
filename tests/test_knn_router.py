"""The Python KNNRouter: scikit-learn conventions, conversions, errors, agreement with the core."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from knnroute import KNNRouter, make_router
from knnroute.routers import NotFittedError
from tests import reference as ref


def problem(seed=0, n=400, d=32, M=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))  # float64 on purpose: the router converts once
    S = (rng.random((n, M)) < 0.5).astype(float)
    C = rng.random((n, M)) * 1e-3
    S[rng.random((n, M)) < 0.1] = np.nan
    return rng, X, S, C


def test_fit_returns_self_and_sets_learned_attributes():
    _, X, S, C = problem()
    r = KNNRouter(k=10)
    assert r.fit(X, S, C, model_names=list("abcde")) is r
    assert r.n_features_in_ == 32 and r.model_names_ == list("abcde")
    assert r.core_.size == 400 and r.core_.k == 10
    assert "k=10" in repr(r)


def test_predict_matches_numpy_reference():
    rng, X, S, C = problem(1)
    Q = rng.standard_normal((20, 32))
    r = KNNRouter(k=15, weighting="similarity", shrinkage=1.0).fit(X, S, C)
    sh, ch = r.predict(Q)
    # 10% of the score cells are missing: each model's neighbours are the rows observing it within the
    # common radius of the per-model 15 nearest (tests/test_per_model.py); similarities from the core
    Q32 = Q.astype(np.float32)
    idx, sim, cnt = r.core_.search_per_model(Q32)
    order, sims = r.core_.search(Q32, len(X))
    A = np.empty((len(Q), len(X)), np.float32)
    np.put_along_axis(A, order, sims, axis=1)
    lists = ref.radius_lists(idx, sim, cnt, A, S)
    rs, rc, _, _ = ref.predict_per_model(lists, S.astype(np.float32), C.astype(np.float32), "similarity", 0.05, 1.0)
    np.testing.assert_allclose(sh, rs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ch, rc, rtol=1e-5, atol=1e-9)


def test_route_shapes_names_and_fast_path():
    rng, X, S, C = problem(2)
    Q = rng.standard_normal((7, 32))
    r = KNNRouter(k=20).fit(X, S, C, model_names=["m0", "m1", "m2", "m3", "m4"])
    one = r.route(Q, 0.0)
    many = r.route(Q, [0.0, 100.0, 1e4])
    assert one.shape == (7,) and many.shape == (7, 3) and one.dtype == np.int64
    np.testing.assert_array_equal(one, many[:, 0])
    names = r.route(Q, 0.0, return_names=True)
    assert list(names) == [f"m{i}" for i in one]
    q32 = np.ascontiguousarray(Q[0], dtype=np.float32)
    assert r.route_one(q32, 100.0) == many[0, 1]
    assert r.route(Q[0], 100.0).shape == (1,)
    conf = r.confidence(Q, 100.0)
    np.testing.assert_array_equal(conf["model"], many[:, 1])
    assert np.all((conf["agreement"] >= 0) & (conf["agreement"] <= 1))
    idx, sim = r.kneighbors(Q)
    assert idx.shape == (7, 20) and np.all(np.diff(sim, axis=1) <= 0)


def test_make_router_names():
    assert make_router("knn-10").k == 10
    assert make_router("knn-100").k == 100
    with pytest.raises(ValueError, match="unknown router"):
        make_router("knn-fancy")
    with pytest.raises(ValueError, match="reference row"):
        make_router("oracle")


def test_errors():
    rng, X, S, C = problem(3)
    r = KNNRouter(k=5)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        r.predict(X[:2])
    with pytest.raises(ValueError, match="k=500 exceeds the support size n=400"):
        KNNRouter(k=500).fit(X, S, C)
    with pytest.raises(ValueError, match="positive integer"):
        KNNRouter(k=0).fit(X, S, C)
    with pytest.raises(ValueError, match="weighting"):
        KNNRouter(weighting="cosine").fit(X, S, C)
    with pytest.raises(ValueError, match="rows but X has"):
        r.fit(X, S[:-1], C[:-1])
    with pytest.raises(ValueError, match="same shape"):
        r.fit(X, S, C[:, :3])
    Cn = C.copy()
    Cn[3, 2] = -0.5
    with pytest.raises(ValueError, match=r"costs\[3, 2\] = -0.5 is negative"):
        r.fit(X, S, Cn)
    with pytest.raises(TypeError, match="numeric"):
        r.fit(X, np.full(S.shape, "x", dtype=object), C)
    with pytest.raises(ValueError, match="empty"):
        r.fit(X[:0], S[:0], C[:0])
    r.fit(X, S, C)
    with pytest.raises(ValueError, match="dimension 31 but the router was fitted on dimension 32"):
        r.route(X[:2, :31], 0.0)
    Xn = X[:2].copy()
    Xn[1, 0] = np.inf
    with pytest.raises(ValueError, match="row 1 has a NaN or infinite"):
        r.predict(Xn)
    with pytest.raises(ValueError, match="zero vector"):
        r.predict(np.zeros((1, 32)))
    with pytest.raises(ValueError, match="2-D"):
        r.predict(np.zeros((2, 2, 32)))
    with pytest.raises(TypeError, match="float32"):
        r.route_one(X[0], 0.0)  # the hot path does not convert
    with pytest.raises(ValueError, match="finite"):
        r.route(X[:2], np.nan)
    with pytest.raises(ValueError, match="model_names has 2 entries"):
        KNNRouter(k=5).fit(X, S, C, model_names=["a", "b"])


def test_import_knnroute_is_light():
    code = (
        "import sys, knnroute; from knnroute import KNNRouter; "
        "heavy=[m for m in ('torch','sklearn','pandas','matplotlib','sentence_transformers','fastapi','ray','scipy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
