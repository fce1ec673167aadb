"""Cost-quality curves, their non-decreasing convex hulls, AUC and gain.

Units: true scores come in on ``[0, 1]`` (``RoutingDataset.scores``) and curves report them x100; costs are
USD per query; ``c_max`` is the largest mean test cost of any single model and normalises the cost axis of
the AUC (``../shared/DESIGN.md`` § Evaluation conventions).

The numerics run in :mod:`knnroute_core` when it is importable and fall back to
:mod:`knnroute.evaluate.reference` otherwise (or when ``KNNROUTE_EVAL_BACKEND=numpy``); both follow one
definition and the tests hold them equal.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.evaluate import reference as _ref

__all__ = [
    "Curve",
    "backend",
    "cost_scale",
    "curve_from_points",
    "curve_from_predictions",
    "curve_from_routes",
    "fill_missing",
    "gain",
    "hull_auc",
    "nondecreasing_hull",
    "router_curve",
]

SCORE_SCALE = 100.0


def _core() -> ModuleType | None:
    if os.environ.get("KNNROUTE_EVAL_BACKEND", "").lower() == "numpy":
        return None
    try:
        import knnroute_core
    except ImportError:
        return None
    return knnroute_core


def backend() -> str:
    """``"knnroute_core"`` when the compiled core does the numerics, else ``"numpy"``."""
    return "knnroute_core" if _core() is not None else "numpy"


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
        c = np.where(miss, _ref.column_means(c)[None, :], c)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(c))):
        raise ValueError("scores and costs must be finite or NaN (missing); found +-inf")
    return s, c


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
    """Vertices of the non-decreasing convex hull of the points + (0, 0); see :mod:`.reference`."""
    core = _core()
    c = np.ascontiguousarray(costs, dtype=np.float64).ravel()
    s = np.ascontiguousarray(scores, dtype=np.float64).ravel()
    if core is not None:
        hc, hs = core.nondecreasing_hull(c, s)
        return np.asarray(hc, dtype=np.float64), np.asarray(hs, dtype=np.float64)
    return _ref.nondecreasing_hull(c, s)


def hull_auc(costs: ArrayLike, scores: ArrayLike, c_max: float) -> float:
    """Area under the non-decreasing convex hull (+ (0, 0)) over cost / c_max in [0, 1]."""
    core = _core()
    c = np.ascontiguousarray(costs, dtype=np.float64).ravel()
    s = np.ascontiguousarray(scores, dtype=np.float64).ravel()
    if core is not None:
        return float(core.hull_auc(c, s, float(c_max)))
    return _ref.hull_auc(c, s, float(c_max))


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
    core = _core()
    if lams is None:
        if core is not None:
            lam, mc, ms = core.sweep(s, c, ts, tc)
        else:
            lam, mc, ms = _ref.sweep(s, c, ts, tc)
        lam = np.asarray(lam, dtype=np.float64)
    else:
        lam = np.ascontiguousarray(np.atleast_1d(lams), dtype=np.float64)
        if core is not None:
            idx = np.asarray(core.route(s, c, lam))
        else:
            idx = _ref.route(s, c, lam)
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


def router_curve(
    router: Any,
    X: ArrayLike,
    scores: ArrayLike,
    costs: ArrayLike,
    *,
    c_max: float | None = None,
    lams: ArrayLike | None = None,
) -> Curve:
    """Any fitted router's curve on a test set.

    Parameters
    ----------
    router : fitted router (``predict`` -> ``(s_hat, c_hat)``; selection routers: ``route`` only)
    X : (n, d) float
        Test prompt embeddings.
    scores, costs : (n, M) float
        True test outcomes (scores on [0, 1], costs USD; NaN = missing, filled by the conventions).
    c_max : float, optional
        Cost normalisation; default :func:`cost_scale` of the filled test costs.
    lams : (L,) float, optional
        Lambdas in score per USD. Default: the exact sweep for utility-prediction routers; the dense grid
        (:func:`~knnroute.evaluate.reference.dense_lambda_grid`) for selection routers, which have no
        predictions to sweep.
    """
    ts, tc = fill_missing(scores, costs)
    cm = cost_scale(tc) if c_max is None else float(c_max)
    if getattr(router, "selection", False):
        grid = (
            _ref.dense_lambda_grid(cm) if lams is None else np.atleast_1d(np.asarray(lams, dtype=np.float64))
        )
        return curve_from_routes(np.asarray(router.route(X, grid)), ts, tc, cm, lams=grid)
    s_hat, c_hat = router.predict(X)
    return curve_from_predictions(s_hat, c_hat, ts, tc, cm, lams=lams)


def gain(auc: float, auc_best_single: float, auc_oracle: float) -> float:
    """``(AUC - AUC_best_single) / (AUC_oracle - AUC_best_single)``; NaN when the oracle is not above it."""
    den = auc_oracle - auc_best_single
    if not den > 1e-12:
        return float("nan")
    return (auc - auc_best_single) / den
