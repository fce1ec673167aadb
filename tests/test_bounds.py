"""Per-decision bounds (issue 30, item 2): coverage on real held-out prompts, far and sparse neighbourhoods
fall back, the router file keeps them, ``/route`` returns them, bad input is refused clearly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from knnroute.production import FallbackPolicy, ProductionRouter
from knnroute.production.bounds import Bounds, calibrate_bounds
from knnroute.routers.knn import KNNRouter

NAMES = ["cheap", "mid", "best"]


def _synthetic(n: int = 300, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d))
    lab = rng.integers(4, size=n)
    X = (centres[lab] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    p = np.array([[0.2, 0.5, 0.9], [0.8, 0.85, 0.9], [0.1, 0.6, 0.7], [0.5, 0.5, 0.95]])[lab]
    S = (rng.random((n, 3)) < p).astype(np.float32)
    C = (np.float32([0.001, 0.005, 0.02]) * rng.uniform(0.5, 1.5, size=(n, 3))).astype(np.float32)
    return X, S, C


@pytest.mark.realdata
def test_score_bounds_cover_at_their_level_on_real_held_out_prompts(real_data: Path) -> None:
    """RouterBench ARC-C (0/1 scores, 11 models), WordLlama: calibrate on 20%, check on another 20%."""
    from knnroute.data import load_dataset
    from knnroute.data.splits import random_split
    from knnroute.embed import embed_dataset

    (ds,) = [embed_dataset(d, embedder="wordllama", progress=False) for d in load_dataset("routerbench")
             if d.name == "arc_challenge"]
    lab = random_split(ds.n, 0, (0.6, 0.2, 0.2))
    tr, ca, te = (np.flatnonzero(lab == s) for s in ("train", "val", "test"))
    X, S, C = np.asarray(ds.embeddings), np.asarray(ds.scores, np.float64), np.asarray(ds.costs, np.float64)
    prod = ProductionRouter(KNNRouter(k=20, weighting="similarity").fit(X[tr], S[tr], C[tr]))
    for level in (0.8, 0.9):
        prod.calibrate_bounds(X[ca], S[ca], C[ca], level=level)
        b = prod.predict_bounds(X[te])
        ok = ~b["far"]
        assert ok.mean() > 0.95  # in-distribution prompts almost always get a bound
        inside = (S[te] >= b["score_lower"] - 1e-6) & (S[te] <= b["score_upper"] + 1e-6)
        cov = inside[ok].mean()
        # binomial error over the test prompts (the cells of one prompt are correlated), plus ties of 0/1 scores
        tol = 3 * math.sqrt(level * (1 - level) / ok.sum()) + 1 / (ca.size + 1)
        assert abs(cov - level) <= tol, (level, cov, tol)
        cinside = (C[te] >= b["cost_lower"] - 1e-12) & (C[te] <= b["cost_upper"] + 1e-12)
        assert abs(cinside[ok].mean() - level) <= tol
        # the bounds are real intervals around the prediction, within [0, 1]
        sl, su = b["score_lower"][ok], b["score_upper"][ok]
        assert (sl <= b["s_hat"][ok] + 1e-6).all() and (su >= b["s_hat"][ok] - 1e-6).all()
        assert sl.min() >= 0 and su.max() <= 1


def test_far_prompt_gets_no_bound_and_goes_to_the_fallback_model() -> None:
    X, S, C = _synthetic()
    prod = ProductionRouter(KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES))
    prod.calibrate_bounds(X[200:], S[200:], C[200:])
    near = prod.decide(X[250], lam=0.0)
    assert near.bounds is not None and near.bounds.status == "ok" and near.fallback is None
    assert np.isfinite(near.bounds.score_lower).all() and np.isfinite(near.bounds.cost_upper).all()
    far_q = np.zeros(16, np.float32)
    far_q[0] = 1.0
    far_q -= X[:200].mean(axis=0) / np.linalg.norm(X[:200].mean(axis=0))  # away from every support prompt
    d = prod.decide(far_q, lam=0.0)
    assert d.bounds is not None and d.bounds.status == "far" and np.isnan(d.bounds.score_lower).all()
    assert d.fallback is None and d.model == d.routed_model  # no fallback policy: the decision only says so
    prod.set_fallback(FallbackPolicy("best"))
    d = prod.decide(far_q, lam=1e6)  # the router alone would pick the cheap model
    assert d.routed_model == "cheap" and d.model == "best" and d.fallback == "far"
    _same_as_batch(prod, X[200:260])
    _same_as_batch(prod, far_q[None, :])


def _same_as_batch(prod: ProductionRouter, Q: np.ndarray) -> None:
    """decide's per-request bounds (plain floats) equal predict_bounds' (arrays) for every query."""
    b = prod.predict_bounds(Q)
    for i, q in enumerate(Q):
        d = prod.decide(q, lam=0.0).bounds
        assert d is not None and (d.status == "far") == bool(b["far"][i])
        for key in ("score_lower", "score_upper", "cost_lower", "cost_upper"):
            assert np.array_equal(getattr(d, key), b[key][i], equal_nan=True), key


def test_sparse_neighbourhood_of_the_routed_model_goes_to_the_fallback_model() -> None:
    X, S, C = _synthetic()
    S = S.copy()
    S[:200, 2] = np.nan  # "best" observed on two support rows only (as feedback rows observe one model)
    S[:2, 2] = 1.0
    S[:200, :2] = 0.1
    prod = ProductionRouter(KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES))
    prod.calibrate_bounds(X[200:], S[200:], C[200:])
    assert prod.bounds is not None and prod.bounds.q_score[2] is None  # no calibration cell for "best"
    prod.set_fallback(FallbackPolicy("mid"))
    d = prod.decide(X[0], lam=0.0)
    assert d.routed_model == "best" and d.bounds is not None and d.bounds.status == "sparse"
    assert d.model == "mid" and d.fallback == "sparse"
    assert math.isnan(d.bounds.score_lower[2]) and np.isfinite(d.bounds.score_lower[:2]).all()
    _same_as_batch(prod, X[:50])


def test_bounds_round_trip_and_old_files_are_unchanged(tmp_path: Path) -> None:
    from knnroute import production

    X, S, C = _synthetic()
    prod = ProductionRouter(KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES))
    old = production.load(prod.save(tmp_path / "old.knnr"))
    assert old.bounds is None and old.decide(X[250]).bounds is None
    prod.calibrate_bounds(X[200:], S[200:], C[200:], level=0.8)
    again = production.load(prod.save(tmp_path / "new.knnr"))
    assert again.bounds == prod.bounds and again.bounds.level == 0.8
    a, b = prod.decide(X[250], 10.0), again.decide(X[250], 10.0)
    assert a.model == b.model and np.array_equal(a.bounds.score_upper, b.bounds.score_upper)
    assert old.decide(X[250], 10.0).model == a.model  # bounds never change a decision that has one


def test_bad_bounds_are_refused_with_a_clear_message() -> None:
    X, S, C = _synthetic()
    knn = KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES)
    prod = ProductionRouter(knn)
    with pytest.raises(ValueError, match="level must be in"):
        calibrate_bounds(prod, X[200:], S[200:], C[200:], level=1.5)
    with pytest.raises(ValueError, match="must have shape"):
        calibrate_bounds(prod, X[200:], S[200:, :2], C[200:])
    good = Bounds(0.9, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], 0.5).to_dict()
    for patch, msg in (({"q_score": [1.0, "x", 1.0]}, "quantiles must be finite"),
                       ({"q_score": [1.0]}, "one entry per model"),
                       ({"max_distance": float("nan")}, "must be finite"),
                       ({"level": 0}, "level must be in"),
                       ({"version": 7}, "version 7 is not supported"),
                       ({"evil": 1}, "must have the fields")):
        with pytest.raises(ValueError, match=msg):
            ProductionRouter(knn, meta={"bounds": {**good, **patch}})
    with pytest.raises(ValueError, match="has 4 models"):
        ProductionRouter(knn, meta={"bounds": {**good, "q_score": [1.0] * 4, "q_cost": [1.0] * 4,
                                               "cost_floor": [0.0] * 4}})


def test_route_returns_the_bounds() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from knnroute.service.app import create_app

    X, S, C = _synthetic()
    prod = ProductionRouter(KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES))
    with TestClient(create_app(prod)) as c:
        r = c.post("/route", json={"embedding": X[250].tolist(), "lambda": 0.0})
        assert r.status_code == 200 and r.json()["bounds"] is None
        assert "score_bounds" not in r.json()["predicted"]["best"]  # no calibrated bounds: none in the answer
    prod.calibrate_bounds(X[200:], S[200:], C[200:])
    prod.set_fallback(FallbackPolicy("best"))
    with TestClient(create_app(prod)) as c:
        j = c.post("/route", json={"embedding": X[250].tolist(), "lambda": 0.0}).json()
        assert j["bounds"] == {"level": 0.9, "status": "ok"}
        for m in NAMES:
            p = j["predicted"][m]
            lo, hi = p["score_bounds"]
            assert 0 <= lo <= p["score"] <= hi <= 1 and p["cost_bounds"][0] <= p["cost"] <= p["cost_bounds"][1]
        far_q = -X[:200].mean(axis=0)
        j = c.post("/route", json={"embedding": far_q.tolist(), "lambda": 1e6}).json()
        assert j["bounds"]["status"] == "far" and j["fallback"] == "far" and j["model"] == "best"
        assert all(j["predicted"][m]["score_bounds"] is None for m in NAMES)
        batch = c.post("/route/batch", json={"items": [{"embedding": X[250].tolist()}, {"embedding": far_q.tolist()}]})
        assert [x["bounds"]["status"] for x in batch.json()["results"]] == ["ok", "far"]
        bad = c.post("/route", json={"embedding": X[250].tolist(), "lambda": -1})
        assert bad.status_code == 422 and "lambda" in bad.text
        bad = c.post("/route", json={"embedding": [0.0] * 16})
        assert bad.status_code == 422 and "Traceback" not in bad.text


def test_router_file_with_bad_bounds_or_normaliser_is_one_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from knnroute import production
    from knnroute.cli import main
    from knnroute.production.persist import RouterFileError, write_state

    X, S, C = _synthetic()
    st = ProductionRouter(KNNRouter(k=10).fit(X[:200], S[:200], C[:200], model_names=NAMES)).state()
    cases = (
        ({"embedder": {"identity": "x", "spec": None,
                       "text_norm": {"version": 1, "words": ["a"], "counts": [-1]}}},
         "embedder text_norm counts must be positive integers"),
        ({"meta": {"bounds": {"level": 0.9, "q_score": [1, "x", 1], "q_cost": [1, 1, 1], "cost_floor": [0, 0, 0],
                              "max_distance": 0.3}}}, "bounds quantiles must be finite numbers"),
    )
    for i, (patch, msg) in enumerate(cases):
        f = tmp_path / f"bad{i}.knnr"
        write_state({**st, **patch}, f, "f32")
        with pytest.raises(RouterFileError, match=msg):
            production.load(f, load_embedder=False)
        assert main(["serve", "--router", str(f), "--port", "0"]) != 0
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
