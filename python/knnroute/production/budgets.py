"""Budgets: the router's operating points on held-out prompts, and picking lambda for a cost or a share.

A :class:`BudgetTable` holds one point per segment of the exact lambda sweep (lambda, mean cost, mean
score, share per model) measured on held-out prompts by :func:`measure_budget`; ``for_budget`` and
``for_share`` pick the best-scoring point under a mean cost or a model share. Units: scores on [0, 1],
costs in USD per query, lambda in score per USD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_BUDGET_POINTS", "BudgetPoint", "BudgetTable", "describe_default", "measure_budget", "thin"]

# Budget tables longer than this are thinned (keeping every Pareto point) before being stored.
MAX_BUDGET_POINTS = 2048


@dataclass(frozen=True)
class BudgetPoint:
    """One operating point: lambda and what it gave on the held-out prompts."""

    lam: float
    mean_cost: float  # USD per query
    mean_score: float  # on [0, 1]
    shares: dict[str, float]  # share of queries routed to each model
    feasible: bool = True  # False when no point meets the target (the closest one is returned)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BudgetTable:
    """The router's operating points on held-out data, one per segment of the exact lambda sweep.

    Attributes
    ----------
    lams : (P,) float64, increasing
        A lambda inside each segment (the midpoint; the last segment extends to infinity).
    mean_cost, mean_score : (P,) float64
        Mean true cost (USD) and score ([0, 1]) over the held-out prompts at that lambda (missing
        cells filled by the evaluation conventions).
    shares : (P, M) float64
        Share of held-out prompts routed to each model.
    model_names : list of str
    n : int
        Held-out prompts the table was measured on.
    """

    lams: np.ndarray
    mean_cost: np.ndarray
    mean_score: np.ndarray
    shares: np.ndarray
    model_names: list[str]
    n: int
    source: str = ""

    def __post_init__(self) -> None:
        self.lams = np.asarray(self.lams, dtype=np.float64).ravel()
        self.mean_cost = np.asarray(self.mean_cost, dtype=np.float64).ravel()
        self.mean_score = np.asarray(self.mean_score, dtype=np.float64).ravel()
        self.shares = np.asarray(self.shares, dtype=np.float64).reshape(len(self.lams), -1)
        P = len(self.lams)
        if P == 0:
            raise ValueError("a budget table needs at least one point")
        if len(self.mean_cost) != P or len(self.mean_score) != P:
            raise ValueError("budget table: lams, mean_cost and mean_score must have one length")
        if self.shares.shape[1] != len(self.model_names):
            raise ValueError("budget table: shares must have one column per model")
        for a in (self.lams, self.mean_cost, self.mean_score, self.shares):
            if not np.all(np.isfinite(a)):
                raise ValueError("budget table values must be finite")

    def point(self, i: int, feasible: bool = True) -> BudgetPoint:
        return BudgetPoint(
            lam=float(self.lams[i]),
            mean_cost=float(self.mean_cost[i]),
            mean_score=float(self.mean_score[i]),
            shares={m: float(s) for m, s in zip(self.model_names, self.shares[i], strict=True)},
            feasible=feasible,
        )

    def _best(self, ok: np.ndarray) -> int:
        """Among the points with ``ok``, the highest score (ties: lower cost, then smaller lambda)."""
        idx = np.flatnonzero(ok)
        order = np.lexsort((self.lams[idx], self.mean_cost[idx], -self.mean_score[idx]))
        return int(idx[order[0]])

    def for_budget(self, max_cost: float) -> BudgetPoint:
        """The best-scoring point with mean cost <= ``max_cost`` (else the cheapest, ``feasible=False``)."""
        if not math.isfinite(max_cost):
            raise ValueError(f"max_cost must be finite, got {max_cost!r}")
        ok = self.mean_cost <= max_cost * (1 + 1e-12)
        if not ok.any():
            cheapest = np.flatnonzero(self.mean_cost == self.mean_cost.min())
            return self.point(self._best(np.isin(np.arange(len(self.lams)), cheapest)), feasible=False)
        return self.point(self._best(ok))

    def for_share(self, model: str, max_share: float) -> BudgetPoint:
        """The best-scoring point sending at most ``max_share`` of queries to ``model``
        (else the point with the smallest share, ``feasible=False``)."""
        if model not in self.model_names:
            raise ValueError(f"unknown model {model!r}; the router's models are {self.model_names}")
        if not (0.0 <= max_share <= 1.0):
            raise ValueError(f"max_share must be in [0, 1], got {max_share!r}")
        col = self.shares[:, self.model_names.index(model)]
        ok = col <= max_share + 1e-12
        if not ok.any():
            return self.point(self._best(col == col.min()), feasible=False)
        return self.point(self._best(ok))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lams": self.lams.tolist(),
            "mean_cost": self.mean_cost.tolist(),
            "mean_score": self.mean_score.tolist(),
            "shares": self.shares.tolist(),
            "model_names": list(self.model_names),
            "n": int(self.n),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetTable:
        names = d["model_names"]
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ValueError("budget table model_names must be a list of str")
        return cls(
            lams=np.asarray(d["lams"], dtype=np.float64),
            mean_cost=np.asarray(d["mean_cost"], dtype=np.float64),
            mean_score=np.asarray(d["mean_score"], dtype=np.float64),
            shares=np.asarray(d["shares"], dtype=np.float64),
            model_names=list(names),
            n=int(d.get("n", 0)),
            source=str(d.get("source", "")),
        )


def thin(cost: np.ndarray, score: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep: all when few; else every Pareto point (cheaper-and-better frontier) plus an even
    subsample, in the original (lambda) order."""
    P = len(cost)
    if P <= max_points:
        return np.arange(P)
    order = np.lexsort((-score, cost))
    pareto, best = [], -np.inf
    for i in order:
        if score[i] > best:
            pareto.append(i)
            best = score[i]
    rest = max(max_points - len(pareto), 2)
    even = np.linspace(0, P - 1, rest).round().astype(np.int64)
    return np.unique(np.concatenate([np.asarray(pareto, dtype=np.int64), even]))


def measure_budget(s_hat: np.ndarray, c_hat: np.ndarray, scores: Any, costs: Any, model_names: list[str],
                   source: str = "held-out prompts") -> BudgetTable:
    """The operating points of predictions ``(s_hat, c_hat)`` (B, M) against true outcomes, one per
    exact-sweep segment (thinned to :data:`MAX_BUDGET_POINTS`).

    ``scores``, ``costs`` : (B, M) true outcomes (NaN = missing: a missing score counts as 0, a missing
    cost as the model's mean, as in evaluation).
    """
    import knnroute_core
    from knnroute.routers.curves import fill_missing

    ts, tc = fill_missing(scores, costs)
    M = len(model_names)
    if ts.shape[1] != M:
        raise ValueError(f"held-out outcomes have {ts.shape[1]} models, the router has {M}")
    if ts.shape[0] != s_hat.shape[0]:
        raise ValueError("held-out X and outcomes disagree on the number of prompts")
    lam_b, _, _ = knnroute_core.sweep(
        np.ascontiguousarray(s_hat), np.ascontiguousarray(c_hat), np.ascontiguousarray(ts),
        np.ascontiguousarray(tc)
    )
    lam_b = np.asarray(lam_b, dtype=np.float64)
    # one lambda strictly inside each segment [lam_b[p], lam_b[p+1])
    nxt = np.append(lam_b[1:], np.inf)
    mids = np.where(np.isfinite(nxt), 0.5 * (lam_b + nxt), 2.0 * lam_b + 1.0)
    idx = np.asarray(knnroute_core.route(s_hat, c_hat, mids))  # (B, P)
    rows = np.arange(ts.shape[0])[:, None]
    mc = tc[rows, idx].mean(axis=0)
    ms = ts[rows, idx].mean(axis=0)
    shares = np.stack([(idx == m).mean(axis=0) for m in range(M)], axis=1)
    keep = thin(mc, ms, MAX_BUDGET_POINTS)
    return BudgetTable(mids[keep], mc[keep], ms[keep], shares[keep], list(model_names), int(ts.shape[0]),
                       source)


def describe_default(default_lambda: float, budget: BudgetTable | None) -> str:
    """What a request without lambda or a budget gets, in one line (``knnroute fit`` prints it, ``serve``
    logs it): the default lambda and, with a budget table, its operating point on the held-out prompts."""
    lam = float(default_lambda)
    what = (
        "the model with the highest predicted score, whatever its cost" if lam == 0
        else f"the model with the best predicted score minus {lam:g} x its predicted cost (USD)"
    )
    text = f"a request without lambda or max_cost gets lambda = {lam:g} (score per USD): {what}"
    if budget is not None:
        i = int(np.argmin(np.abs(budget.lams - lam)))
        p = budget.point(i)
        top = max(p.shares, key=lambda m: p.shares[m])
        text += (
            f"; on {budget.n} held-out prompts: mean cost ${p.mean_cost:.3g} per query, mean score "
            f"{p.mean_score:.3f}, {p.shares[top]:.0%} to {top}"
        )
    return text + ". Send lambda or max_cost per request, or fit with --default-lambda"

