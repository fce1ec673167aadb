"""Deprecated: the learned baselines moved to :mod:`knnroute.routers.linear` (``LinearRouter``),
:mod:`knnroute.routers.mlp` (``MLPRouter``) and :mod:`knnroute.routers.base` (``route_predictions``)."""

from __future__ import annotations

import warnings

from knnroute.routers.base import route_predictions
from knnroute.routers.linear import LinearRouter
from knnroute.routers.mlp import MLPRouter

__all__ = ["LinearRouter", "MLPRouter", "route_predictions"]

warnings.warn(
    "knnroute.routers.baselines is deprecated: import LinearRouter from knnroute.routers.linear, MLPRouter "
    "from knnroute.routers.mlp and route_predictions from knnroute.routers.base",
    DeprecationWarning,
    stacklevel=2,
)
