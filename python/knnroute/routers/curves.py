"""Cost-quality curves, their non-decreasing convex hulls and AUC, on :mod:`knnroute_core`.

Units: true scores come in on ``[0, 1]`` (``RoutingDataset.scores``) and curves report them x100; costs are
USD per query; ``c_max`` is the largest mean test cost of any single model and normalises the cost axis of
the AUC (``python/knnroute/evaluate/README.md`` § Conventions).

Routing, the exact lambda sweep, the hull and the AUC run in :mod:`knnroute_core`; the NumPy definitions
they are tested against live in ``tests/reference.py``. This module sits below both :mod:`knnroute.routers`'
tuned kNN and :mod:`knnroute.evaluate` (it imports neither).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import knnroute_core

__all__ = [
    "SCORE_SCALE",
    "Curve",
    "column_means",
    "cost_scale",
    "curve_from_points",
    "curve_from_predictions",
    "curve_from_routes",
    "dense_lambda_grid",
    "fill_missing",
    "hull_auc",
    "nondecreasing_hull",
]

SCORE_SCALE = 100.0


@dataclass(frozen=True)
class Curve:
    """One router's cost-quality curve on one test set.

    Attributes
    ----------
    cost : (P,) float64
        Mean true cost (USD per query) of each point.
    score : (P,) float64
        Mean true score x100 of each point.
    lams : (P,) float64 or None
        The lambda (score on [0, 1] per USD) of each point; None for points not produced by a sweep.
    c_max : float
        Cost normalisation (USD).
    hull_cost, hull_score : (H,) float64
        Vertices of the non-decreasing convex hull with the (0, 0) anchor (flat to the right of the last).
    auc : float
        Area under the hull over cost / c_max in [0, 1]; in [0, 100].
    """

    cost: NDArray[np.float64]
    score: NDArray[np.float64]
    lams: NDArray[np.float64] | None
    c_max: float
    hull_cost: NDArray[np.float64]
    hull_score: NDArray[np.float64]
    auc: float
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, points: bool = True) -> dict[str, Any]:
        """JSON-ready lists; ``points=False`` keeps only the hull."""
        out: dict[str, Any] = {
            "c_max": self.c_max,
            "auc": self.auc,
            "hull_cost": self.hull_cost.tolist(),
            "hull_score": self.hull_score.tolist(),
        }
        if points:
            out["cost"] = self.cost.tolist()
            out["score"] = self.score.tolist()
            if self.lams is not None:
                out["lams"] = [x if math.isfinite(x) else None for x in self.lams.tolist()]
        return out


def fill_missing(scores: ArrayLike, costs: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Test-set truth with missing cells filled by the conventions.

    A missing score counts as 0; a missing cost as that model's mean observed cost on the same rows
    (0 if the model has no observed cost at all).

    Parameters
    ----------
    scores, costs : (n, M) float, NaN = missing

    Returns
    -------
    (n, M) float64 arrays with no NaN.
    """
    s = np.array(scores, dtype=np.float64)
    c = np.array(costs, dtype=np.float64)
    if s.shape != c.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and costs {c.shape} must be (n, M) arrays of one shape")
    s[np.isnan(s)] = 0.0
    miss = np.isnan(c)
    if miss.any():
        c = np.where(miss, column_means(c)[None, :], c)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(c))):
        raise ValueError("scores and costs must be finite or NaN (missing); found +-inf")
    return s, c


def column_means(values: ArrayLike) -> NDArray[np.float64]:
    """Per-column mean over observed (non-NaN) cells; a column with no observation gets 0."""
    v = np.asarray(values, dtype=np.float64)
    obs = ~np.isnan(v)
    n = obs.sum(axis=0)
    tot = np.where(obs, v, 0.0).sum(axis=0)
    return np.divide(tot, n, out=np.zeros(v.shape[1]), where=n > 0)


def cost_scale(costs: ArrayLike) -> float:
    """``c_max``: the largest mean cost of any single model over the rows given (filled test costs)."""
    c = np.asarray(costs, dtype=np.float64)
    c_max = float(c.mean(axis=0).max())
    if not c_max > 0:
        raise ValueError(
            "every model has zero mean cost on this test set: the cost axis cannot be normalised"
        )
    return c_max


def nondecreasing_hull(
    costs: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vertices of the non-decreasing convex hull of the points + (0, 0) (``knnroute_core``)."""
    c = np.ascontiguousarray(costs, dtype=np.float64).ravel()
    s = np.ascontiguousarray(scores, dtype=np.float64).ravel()
    hc, hs = knnroute_core.nondecreasing_hull(c, s)
    return np.asarray(hc, dtype=np.float64), np.asarray(hs, dtype=np.float64)


def hull_auc(costs: ArrayLike, scores: ArrayLike, c_max: float) -> float:
    """Area under the non-decreasing convex hull (+ (0, 0)) over cost / c_max in [0, 1]."""
    c = np.ascontiguousarray(costs, dtype=np.float64).ravel()
    s = np.ascontiguousarray(scores, dtype=np.float64).ravel()
    return float(knnroute_core.hull_auc(c, s, float(c_max)))


def curve_from_points(
    cost: ArrayLike,
    score: ArrayLike,
    c_max: float,
    lams: ArrayLike | None = None,
    **meta: Any,
) -> Curve:
    """A curve from points already on the x100 score scale."""
    c = np.asarray(cost, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    hc, hs = nondecreasing_hull(c, s)
    return Curve(
        cost=c,
        score=s,
        lams=None if lams is None else np.asarray(lams, dtype=np.float64).ravel(),
        c_max=float(c_max),
        hull_cost=hc,
        hull_score=hs,
        auc=hull_auc(c, s, c_max),
        meta=dict(meta),
    )


def curve_from_predictions(
    s_hat: ArrayLike,
    c_hat: ArrayLike,
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    c_max: float,
    lams: ArrayLike | None = None,
) -> Curve:
    """A router's curve from its predictions.

    Parameters
    ----------
    s_hat, c_hat : (B, M) float
        Predicted score on [0, 1] and cost in USD (NaN not allowed).
    true_scores, true_costs : (B, M) float
        Filled truth (:func:`fill_missing`); scores on [0, 1].
    c_max : float
        Cost normalisation (:func:`cost_scale`).
    lams : (L,) float, optional
        A lambda grid (score on [0, 1] per USD). Default: the exact sweep over all lambda >= 0, one point per
        distinct envelope breakpoint, so the AUC is that of the limit of ever denser grids.
    """
    s = np.ascontiguousarray(s_hat, dtype=np.float32)
    c = np.ascontiguousarray(c_hat, dtype=np.float32)
    ts = np.ascontiguousarray(true_scores, dtype=np.float64)
    tc = np.ascontiguousarray(true_costs, dtype=np.float64)
    if not (s.shape == c.shape == ts.shape == tc.shape) or s.ndim != 2:
        raise ValueError(
            f"s_hat {s.shape}, c_hat {c.shape}, true_scores {ts.shape}, true_costs {tc.shape}: "
            "all must be one (B, M) shape"
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(c))):
        raise ValueError("predictions must be finite: a router returned NaN or inf in s_hat/c_hat")
    if lams is None:
        lam, mc, ms = knnroute_core.sweep(s, c, ts, tc)
        lam = np.asarray(lam, dtype=np.float64)
    else:
        lam = np.ascontiguousarray(np.atleast_1d(lams), dtype=np.float64)
        idx = np.asarray(knnroute_core.route(s, c, lam))
        return curve_from_routes(idx, ts, tc, c_max, lams=lam)
    return curve_from_points(np.asarray(mc), SCORE_SCALE * np.asarray(ms), c_max, lams=lam)


def curve_from_routes(
    idx: ArrayLike,
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    c_max: float,
    lams: ArrayLike | None = None,
) -> Curve:
    """A curve from routing decisions: ``idx`` (B,) or (B, L) model indices -> one point per column."""
    ix = np.asarray(idx, dtype=np.int64)
    if ix.ndim == 1:
        ix = ix[:, None]
    ts = np.asarray(true_scores, dtype=np.float64)
    tc = np.asarray(true_costs, dtype=np.float64)
    if ix.shape[0] != ts.shape[0]:
        raise ValueError(f"idx has {ix.shape[0]} rows but the truth has {ts.shape[0]}")
    rows = np.arange(ts.shape[0])[:, None]
    return curve_from_points(
        tc[rows, ix].mean(axis=0), SCORE_SCALE * ts[rows, ix].mean(axis=0), c_max, lams=lams
    )


def dense_lambda_grid(c_max: float, n: int = 1000, lo: float = 1e-3, hi: float = 1e5) -> NDArray[np.float64]:
    """The dense-grid protocol's lambdas for scores on [0, 1] and costs in USD.

    ``0`` followed by ``n - 1`` log-spaced values of the *normalised* trade-off ``lam * c_max`` in
    ``[lo, hi]`` (score per unit of ``cost / c_max``), converted back to USD units by dividing by ``c_max``.
    At ``lam * c_max = 1e5`` a model must be ``1e-5 * c_max`` cheaper to be worth a point of score, which on
    every dataset here selects the cheapest model; at ``1e-3`` the best-score model wins unless scores tie.
    The paper does not publish its grid; this is our reading of "varying lambda across a wide range".
    """
    if n < 2:
        raise ValueError("n must be >= 2")
    return np.concatenate([[0.0], np.geomspace(lo, hi, n - 1)]) / float(c_max)
