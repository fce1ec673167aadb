"""Deprecated location of the tuned kNN: import it from :mod:`knnroute.routers.tuned`."""

from __future__ import annotations

import warnings

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

warnings.warn(
    "knnroute.evaluate.tuning is deprecated: import TunedKNNRouter and its grid from knnroute.routers.tuned",
    DeprecationWarning,
    stacklevel=2,
)
