"""Evaluation curves: any router's curve on a test set, and gain over the Best-single hull.

The curve machinery itself (:class:`Curve`, missing-cell filling, ``c_max``, hull, AUC, curves from
predictions or routes, the dense lambda grid) lives in :mod:`knnroute.routers.curves`, below both routers
and evaluation; it is re-exported here so ``knnroute.evaluate.curves.<name>`` keeps working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from knnroute.routers.curves import (
    SCORE_SCALE,
    Curve,
    column_means,
    cost_scale,
    curve_from_points,
    curve_from_predictions,
    curve_from_routes,
    dense_lambda_grid,
    fill_missing,
    hull_auc,
    nondecreasing_hull,
)

__all__ = [
    "SCORE_SCALE",
    "Curve",
    "backend",
    "column_means",
    "cost_scale",
    "curve_from_points",
    "curve_from_predictions",
    "curve_from_routes",
    "dense_lambda_grid",
    "fill_missing",
    "gain",
    "hull_auc",
    "nondecreasing_hull",
    "router_curve",
]


def backend() -> str:
    """The engine of the curve numerics (the report's ``numerics`` field): always ``"knnroute_core"``."""
    return "knnroute_core"


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
        (:func:`~knnroute.routers.curves.dense_lambda_grid`) for selection routers, which have no
        predictions to sweep.
    """
    ts, tc = fill_missing(scores, costs)
    cm = cost_scale(tc) if c_max is None else float(c_max)
    if getattr(router, "selection", False):
        grid = (
            dense_lambda_grid(cm) if lams is None else np.atleast_1d(np.asarray(lams, dtype=np.float64))
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
