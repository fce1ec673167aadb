"""Exploration policies (knnroute.routers.explore) and the production router's feedback-facing parts:
per-model statistics on decisions, row times and half-life through a save / load round trip."""

from __future__ import annotations

import numpy as np
import pytest

import knnroute
from knnroute.production import ProductionRouter
from knnroute.routers.explore import ExplorePolicy, choose, posterior_sd
from knnroute.routers.knn import KNNRouter


def test_greedy_is_the_routers_argmax_with_its_tie_rule():
    s = np.array([0.5, 0.7, 0.7])
    c = np.array([1.0, 2.0, 1.5])
    assert choose(s, c, [5, 5, 5], [0.1] * 3, 0.0, "greedy") == 2  # tie on score: the cheaper
    assert choose(s, c, [5, 5, 5], [0.1] * 3, 1.0, "greedy") == 0


def test_posterior_sd_shrinks_with_count_and_grows_with_spread():
    sd = posterior_sd([0, 4, 100, 100], [0.0, 0.5, 0.5, 0.0])
    assert sd[0] == pytest.approx(0.5)  # no neighbour: the prior's 0.5 over one pseudo-row
    assert sd[0] > sd[1] > sd[2] > sd[3] > 0


def test_thompson_explores_uncertain_models_and_not_certain_losers():
    rng = np.random.default_rng(0)
    s = np.array([0.8, 0.6, 0.6])
    c = np.zeros(3)
    count = np.array([50.0, 50.0, 1.0])
    spread = np.array([0.4, 0.0, 0.5])  # model 1: 50 agreeing neighbours; model 2: one neighbour
    pol = ExplorePolicy("thompson", scale=1.0)
    picks = np.bincount([pol.choose(s, c, count, spread, 0.0, rng) for _ in range(4000)], minlength=3)
    assert picks[0] > picks[2] > picks[1]
    assert picks[1] < 10  # sd 0.01 against the favourite's 0.06: 3.5 sd below it
    assert picks[2] > 200


def test_uniform_explores_at_rate_epsilon():
    rng = np.random.default_rng(1)
    pol = ExplorePolicy("uniform", epsilon=0.3)
    picks = [pol.choose([1.0, 0.0, 0.0], [0, 0, 0], [9] * 3, [0] * 3, 0.0, rng) for _ in range(6000)]
    assert np.mean(np.asarray(picks) != 0) == pytest.approx(0.3 * 2 / 3, abs=0.03)


def test_allowed_models_only():
    rng = np.random.default_rng(2)
    s, c = np.array([0.9, 0.5, 0.4]), np.zeros(3)
    for name in ("greedy", "uniform", "thompson", "ucb"):
        pol = ExplorePolicy(name, epsilon=1.0, scale=5.0)
        picks = {pol.choose(s, c, [1, 1, 1], [0.5] * 3, 0.0, rng, allowed=[False, True, True]) for _ in range(300)}
        assert 0 not in picks
    with pytest.raises(ValueError, match="allowed"):
        choose(s, c, [1] * 3, [0] * 3, 0.0, "greedy", allowed=[False] * 3)


def test_policy_validation_and_dict_round_trip():
    with pytest.raises(ValueError, match="one of"):
        ExplorePolicy("softmax")
    with pytest.raises(ValueError, match="epsilon"):
        ExplorePolicy("uniform", epsilon=2.0)
    p = ExplorePolicy("ucb", scale=0.5)
    assert ExplorePolicy.from_dict(p.to_dict()) == p


def _prod(half_life: float = 0.0) -> tuple[ProductionRouter, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 16)).astype(np.float32)
    S = rng.random((80, 3)).astype(np.float32)
    C = (rng.random((80, 3)) * 1e-3).astype(np.float32)
    knn = KNNRouter(k=10, half_life=half_life).fit(X, S, C, model_names=["a", "b", "c"])
    return ProductionRouter(knn), rng.standard_normal((5, 16)).astype(np.float32)


def test_decision_carries_the_posterior_and_matches_predict_stats():
    prod, Q = _prod()
    s, c, n, sp = prod.knn.predict_stats(Q)
    s2, c2 = prod.predict(Q)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(c, c2)
    for b, q in enumerate(Q):
        dec = prod.decide(q, 0.0)
        np.testing.assert_array_equal(dec.count, n[b])
        np.testing.assert_array_equal(dec.spread, sp[b])
    assert np.all(n == 10)  # uniform weights, every row observes every model


def test_feedback_rows_times_and_half_life_survive_save_and_load(tmp_path):
    prod, Q = _prod(half_life=3.0)
    for i, q in enumerate(Q):  # feedback: one model observed, time = its sequence number
        s = np.full((1, 3), np.nan, np.float32)
        s[0, i % 3] = 1.0
        prod.add(q[None, :], s, np.where(np.isnan(s), np.nan, 1e-4), ids=[f"fb-{i}"], times=[i + 1])
    assert prod.core.partial_rows == 5
    before = prod.predict(Q)
    path = prod.save(tmp_path / "r.knnr")
    back = knnroute.load(path)
    assert back.half_life == 3.0
    np.testing.assert_array_equal(np.asarray(back.core.times()), np.asarray(prod.core.times()))
    for x, y in zip(before, back.predict(Q), strict=True):
        np.testing.assert_array_equal(x, y)
    back.half_life = 0.0
    assert not np.array_equal(back.predict(Q)[0], before[0])
    prod.knn.core_.common_radius = False
    again = knnroute.load(prod.save(tmp_path / "r2.knnr"))
    assert again.core.common_radius is False
