"""What ``ProductionRouter.decide`` returns (its own module: ``router.py`` is at the size limit)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from knnroute.production.bounds import DecisionBounds
from knnroute.production.budgets import BudgetPoint
from knnroute.production.guarantee import Certified

__all__ = ["RouteDecision"]


@dataclass
class RouteDecision:
    """One routed query: the chosen model, predictions and confidence."""

    model: str
    index: int
    lam: float
    s_hat: np.ndarray  # (M,) float32
    c_hat: np.ndarray  # (M,) float32
    kth_similarity: float
    agreement: float
    routed_model: str  # the router's own choice (differs from ``model`` on fallback)
    fallback: str | None = None  # reason, when the fallback model was used
    budget: BudgetPoint | None = field(default=None)
    policy: Certified | None = field(default=None)  # quality_floor / max_mean_cost / strong_share, when used
    # per model (M,): effective neighbour count and score spread (predict_stats), for routers.explore
    count: np.ndarray | None = None
    spread: np.ndarray | None = None
    # per-model bounds on the realised score and cost (knnroute.production.bounds), when calibrated
    bounds: DecisionBounds | None = None
