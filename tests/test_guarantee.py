"""Certified operating points (issue 30): the p-values are valid, the fixed-sequence calibration keeps its
promise on repeated calibration draws, and the policies reach the router file, ``/route`` and ``fit``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from knnroute.production import ProductionRouter
from knnroute.production.guarantee import (
    FLOOR_GRID,
    GuaranteeTable,
    betting_pvalue,
    betting_upper,
    calibrate,
    hb_pvalue,
    lambda_grid,
    upper_bound,
)
from knnroute.routers.knn import KNNRouter

NAMES = ["cheap", "mid", "strong"]


def test_hb_pvalue_is_the_formula() -> None:
    n, t, r = 200, 0.4, 0.3
    kl = r * math.log(r / t) + (1 - r) * math.log((1 - r) / (1 - t))
    want = min(math.exp(-n * kl), math.e * binom.cdf(math.ceil(n * r), n, t))
    assert hb_pvalue(r, n, t) == pytest.approx(want, rel=1e-12)
    assert hb_pvalue(0.5, n, t) == pytest.approx(min(1.0, math.e * binom.cdf(100, n, t)))  # mean above t
    assert hb_pvalue(0.1, 0, 0.5) == 1.0


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_pvalues_are_valid_under_the_null(t: float) -> None:
    """At a true mean exactly t (the hardest null), each test rejects at most delta of the time."""
    rng = np.random.default_rng(7)
    reps, n, delta = 600, 150, 0.1
    bet = hb = 0
    for _ in range(reps):
        x = (rng.random(n) < t).astype(float)  # Bernoulli: the variance is the largest a mean t allows
        bet += betting_pvalue(x, t, delta) <= delta
        hb += hb_pvalue(float(x.mean()), n, t) <= delta
    bound = delta + 3 * math.sqrt(delta * (1 - delta) / reps)
    assert bet / reps <= bound and hb / reps <= bound


def test_betting_is_tighter_when_losses_vary_little() -> None:
    rng = np.random.default_rng(0)
    x = np.clip(0.3 + 0.02 * rng.standard_normal(300), 0, 1)
    assert betting_upper(x, 0.1) < upper_bound(float(x.mean()), 300, 0.1) - 0.03  # 0.310 against 0.351
    assert x.mean() < betting_upper(x, 0.1) < 0.32


def _population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predictions and true outcomes of three models: quality rises with price, the router is noisy."""
    z = rng.random(n)
    S = np.column_stack([z > 0.45, z > 0.25, z > 0.08]).astype(float)
    flip = rng.random(S.shape) < 0.1
    S = np.where(flip, 1 - S, S)
    C = np.tile([1e-4, 1e-3, 1e-2], (n, 1)) * (0.5 + rng.random((n, 3)))
    s_hat = np.clip(S + 0.3 * rng.standard_normal(S.shape), 0, 1).astype(np.float32)
    c_hat = C.astype(np.float32)
    return s_hat, c_hat, S, C


def test_calibration_keeps_its_promise_on_repeated_draws() -> None:
    """Draw 200 calibration sets from one population; the population mean quality at the certified lambda
    falls below the floor in at most delta of them (Learn-then-Test, fixed sequence)."""
    from knnroute.production.guarantee import routed_outcomes

    rng = np.random.default_rng(3)
    pop = _population(200_000, rng)
    lams = lambda_grid(1e-3, 40)
    q_pop, _, _ = routed_outcomes(pop[0], pop[1], pop[2], pop[3], lams)
    pop_q, pop_best = q_pop.mean(axis=0), pop[2][:, 2].mean()
    reps, n, delta, floor = 200, 200, 0.1, 0.95
    violations = certified = 0
    for _ in range(reps):
        i = rng.integers(0, len(pop[0]), n)
        tab = calibrate(pop[0][i], pop[1][i], pop[2][i], pop[3][i], NAMES, "strong", lams, delta=delta,
                        floors=np.array([floor]))
        cert = tab.for_floor(floor)
        if cert.lam is not None:
            certified += 1
            g = int(np.flatnonzero(lams == cert.lam)[0])
            violations += pop_q[g] < floor * pop_best
    assert certified > reps // 2  # it does certify cheaper points than the strong model...
    assert violations / reps <= delta + 3 * math.sqrt(delta * (1 - delta) / reps)  # ...and keeps the promise


def _table(rng: np.random.Generator, n: int = 400) -> GuaranteeTable:
    s_hat, c_hat, S, C = _population(n, rng)
    return calibrate(s_hat, c_hat, S, C, NAMES, "strong", lambda_grid(1e-3, 80), delta=0.1)


def test_policies_pick_what_they_promise() -> None:
    tab = _table(np.random.default_rng(1))
    idx = tab.floor_index
    assert np.all(np.diff(idx[idx >= 0]) <= 0)  # a higher floor never certifies a cheaper lambda
    c90, c97 = tab.for_floor(0.9), tab.for_floor(0.973)
    assert c97.bound == pytest.approx(0.975) and c97.bound in FLOOR_GRID  # rounded up to the grid
    assert c90.certified and c90.expected_score >= 0.9 * tab.best_mean
    assert c97.lam is None or c97.lam <= c90.lam
    x = float(np.median(tab.cost_ucb))
    cc = tab.for_cost(x)
    assert cc.certified and cc.bound <= x and tab.cost_ucb[np.flatnonzero(tab.lams >= cc.lam)].max() <= x
    assert not tab.for_cost(0.0).certified
    sh = tab.for_share(0.3)
    i = int(np.flatnonzero(tab.lams == sh.lam)[0])
    assert tab.strong_share[i] <= 0.3
    with pytest.raises(ValueError, match="at most one policy"):
        tab.resolve(quality_floor=0.9, strong_share=0.2)
    for bad in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="quality_floor"):
            tab.for_floor(bad)
    assert GuaranteeTable.from_dict(json.loads(json.dumps(tab.to_dict()))).to_dict() == tab.to_dict()


def test_router_file_carries_the_table_and_decide_uses_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((600, 8)).astype(np.float32)
    s_hat, c_hat, S, C = _population(600, rng)
    p = ProductionRouter(KNNRouter(k=10).fit(X[:400], S[:400], C[:400], model_names=NAMES))
    with pytest.raises(ValueError, match="needs a router calibrated"):
        p.decide(X[500], quality_floor=0.9)
    tab = p.calibrate_guarantee(X[400:], S[400:], C[400:], delta=0.1)
    p.save(tmp_path / "r.knnr")
    q = ProductionRouter.__new__(ProductionRouter)
    from knnroute import load

    q = load(tmp_path / "r.knnr")
    assert q.guarantee is not None and q.guarantee.to_dict() == tab.to_dict()
    d = q.decide(X[500], quality_floor=0.9)
    assert d.policy is not None and d.policy.policy == "quality_floor"
    if d.policy.lam is not None:
        assert d.lam == d.policy.lam
    else:
        assert d.model == tab.best_model
    with pytest.raises(ValueError, match="not both"):
        q.decide(X[500], lam=1.0, quality_floor=0.9)
    q.meta["default_policy"] = {"strong_share": 0.2}
    assert q.decide(X[500]).policy.policy == "strong_share"  # type: ignore[union-attr]
    assert q.decide(X[500], lam=0.0).policy is None  # an explicit lambda wins over the default policy
    bad = tab.to_dict()
    bad["cost_ucb"] = bad["cost_ucb"][:-1]
    with pytest.raises(ValueError, match="one length"):
        GuaranteeTable.from_dict(bad)


def test_fit_certifies_and_stores_a_default_policy(tmp_path: Path) -> None:
    out = tmp_path / "demo.knnr"
    r = subprocess.run([sys.executable, "-m", "knnroute", "fit", "--data", "demo", "--out", str(out),
                        "--quality-floor", "0.95", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["policy"]["policy"] == "quality_floor" and report["policy"]["value"] == 0.95
    assert set(report["guarantee"]["floors"]) == {"0.9", "0.95", "0.99"}
    assert "quality_floor=0.95:" in r.stderr and "with probability >= 0.9" in r.stderr
    from knnroute import load

    assert load(out).meta["default_policy"] == {"quality_floor": 0.95}
    bad = subprocess.run([sys.executable, "-m", "knnroute", "fit", "--data", "demo", "--out", str(out),
                          "--quality-floor", "1.5"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--quality-floor must be in (0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.strip().splitlines()[-1].startswith("knnroute fit: error:")
