"""Deprecated location of the tuned kNN: import it from :mod:`knnroute.routers.tuned`.

Kept importable (without a warning, while ``knnroute.commands.fit`` still imports it) for code written
against the old path.
"""

from __future__ import annotations

from knnroute.routers.tuned import (
    COST_MODELS,
    KS,
    SHRINKAGES,
    WEIGHTINGS,
    KNNConfig,
    TunedKNNRouter,
    TuningResult,
    aggregate,
    grid_predictions,
    knn_grid,
    loo_neighbours,
    make_knn_router,
    residual_costs,
    tune_knn,
)

__all__ = [
    "COST_MODELS",
    "KS",
    "SHRINKAGES",
    "WEIGHTINGS",
    "KNNConfig",
    "TunedKNNRouter",
    "TuningResult",
    "aggregate",
    "grid_predictions",
    "knn_grid",
    "loo_neighbours",
    "make_knn_router",
    "residual_costs",
    "tune_knn",
]
