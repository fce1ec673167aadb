"""Savings in dollars, read off the cost-quality hulls (issue 21, "Say it in dollars").

Two numbers a user asks first, per test set and router:

- **cost to match the best model**: the smallest cost at which the router's hull reaches the mean test
  score of the best single model (highest mean test score; ties: the cheaper), as a share of that model's
  mean cost (``match_cost_share``; NaN = the hull never reaches it) and as the USD saved per 1,000 queries
  (``match_saving_usd_per_1k``);
- **quality at the cheapest model's cost**: the hull's score (x100) at the mean cost of the cheapest model
  (lowest mean test cost; ties: the higher score), ``score_at_cheapest``, and its gain over that model's own
  score, ``score_at_cheapest_gain``.

Both read the hull (:class:`knnroute.routers.curves.Curve` ``hull_cost`` / ``hull_score``: vertices from
the (0, 0) anchor, non-decreasing, flat to the right of the last vertex), the curve the AUC integrates: a
point between two lambdas' points is realised by routing a share of the prompts at each. Pure functions on
NumPy arrays; :func:`knnroute.evaluate.cell.run_cell` adds the fields to every record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from knnroute.routers.curves import SCORE_SCALE, Curve

__all__ = [
    "SAVINGS_FIELDS",
    "SCORE_TOL",
    "cost_to_reach",
    "hull_value",
    "reference_models",
    "savings_fields",
    "savings_fields_mean",
]

SAVINGS_FIELDS: tuple[str, ...] = (
    "match_cost_share", "match_saving_usd_per_1k", "score_at_cheapest", "score_at_cheapest_gain",
)
# A hull whose top is within this of the target score (x100 scale) counts as reaching it: a router that
# sends every prompt to the best model gets its mean score back up to float rounding (C++ vs NumPy sums).
SCORE_TOL = 1e-9


def _hull(curve: Curve | tuple[ArrayLike, ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    hc, hs = (curve.hull_cost, curve.hull_score) if isinstance(curve, Curve) else curve
    x = np.asarray(hc, dtype=np.float64).ravel()
    y = np.asarray(hs, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"hull_cost {x.shape} and hull_score {y.shape} must be one non-empty shape")
    return x, y


def hull_value(curve: Curve | tuple[ArrayLike, ArrayLike], cost: float) -> float:
    """The hull's score at ``cost``: linear between vertices, flat after the last one.

    ``curve``: a :class:`Curve` or ``(hull_cost, hull_score)`` vertices sorted by cost. Below the first
    vertex's cost (only negative costs, the hull starts at cost 0) the value is NaN. Where two vertices
    share a cost (a free model above the (0, 0) anchor), the higher score counts.
    """
    x, y = _hull(curve)
    c = float(cost)
    if not math.isfinite(c) or c < x[0]:
        return float("nan")
    i = int(np.searchsorted(x, c, side="right"))  # x[i-1] <= c < x[i]
    if i >= x.size:
        return float(y[-1])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(y0 + (y1 - y0) * (c - x0) / (x1 - x0))


def cost_to_reach(curve: Curve | tuple[ArrayLike, ArrayLike], score: float) -> float:
    """The smallest cost at which the hull reaches ``score`` (x100); NaN if it never does.

    A hull whose highest score is within :data:`SCORE_TOL` below ``score`` reaches it at its top vertex.
    """
    x, y = _hull(curve)
    s = float(score)
    if not math.isfinite(s) or y[-1] < s - SCORE_TOL:
        return float("nan")
    s = min(s, float(y[-1]))
    i = int(np.argmax(y >= s))  # first vertex at or above the target (the hull is non-decreasing)
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (x1 - x0) * (s - y0) / (y1 - y0))


def reference_models(scores: ArrayLike, costs: ArrayLike, model_names: Sequence[str]) -> dict[str, Any]:
    """The best and the cheapest single model of one test set (filled truth, scores on [0, 1], USD).

    Best: highest mean score (ties: the cheaper, then the lower index); cheapest: lowest mean cost (ties:
    the higher score, then the lower index). Scores are returned x100, costs as mean USD per query, the
    same numbers as :func:`knnroute.evaluate.references.single_model_points`.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    pc, ps = c.mean(axis=0), SCORE_SCALE * s.mean(axis=0)
    idx = np.arange(pc.size)
    best = int(np.lexsort((idx, pc, -ps))[0])
    cheap = int(np.lexsort((idx, -ps, pc))[0])
    return {
        "best_model": str(model_names[best]),
        "best_model_cost": float(pc[best]),
        "best_model_score": float(ps[best]),
        "cheapest_model": str(model_names[cheap]),
        "cheapest_model_cost": float(pc[cheap]),
        "cheapest_model_score": float(ps[cheap]),
    }


def savings_fields(curve: Curve | tuple[ArrayLike, ArrayLike], ref: dict[str, Any]) -> dict[str, float]:
    """The four savings fields of one router's hull against :func:`reference_models`' ``ref``."""
    best_cost = float(ref["best_model_cost"])
    match = cost_to_reach(curve, ref["best_model_score"])
    share = match / best_cost if best_cost > 0 else float("nan")
    at_cheap = hull_value(curve, ref["cheapest_model_cost"])
    return {
        "match_cost_share": share,
        "match_saving_usd_per_1k": (best_cost - match) * 1000.0,  # NaN when never matched
        "score_at_cheapest": at_cheap,
        "score_at_cheapest_gain": at_cheap - float(ref["cheapest_model_score"]),
    }


def savings_fields_mean(curves: Sequence[Curve], ref: dict[str, Any]) -> dict[str, float]:
    """Mean of :func:`savings_fields` over several curves (the random router's repeats, as its AUC is).

    The match fields are NaN if any repeat never matches (a repeat that never does has no cost to average).
    """
    rows = [savings_fields(cv, ref) for cv in curves]
    if not rows:
        return {k: float("nan") for k in SAVINGS_FIELDS}
    return {k: float(np.mean([r[k] for r in rows])) for k in SAVINGS_FIELDS}
