"""Deprecated alias: batch routing moved to :mod:`knnroute.production.batch`, the evaluation grid on Ray
to :mod:`knnroute.evaluate.ray_eval`, Ray Serve replicas to :mod:`knnroute.service.ray_serve`, and
``init_ray`` / ``require_ray`` to :mod:`knnroute._ray`.

Importing this alias still does not import Ray.
"""

from __future__ import annotations

import warnings

from knnroute._ray import init_ray, require_ray
from knnroute.evaluate.ray_eval import evaluate_ray
from knnroute.production.batch import (
    DECISION_COLUMNS,
    BatchRouteResult,
    RouteBatch,
    decide_batch,
    read_decisions,
    resolve_inputs,
    route_batch,
)
from knnroute.service.ray_serve import serve_deployment

__all__ = [
    "DECISION_COLUMNS",
    "BatchRouteResult",
    "RouteBatch",
    "decide_batch",
    "evaluate_ray",
    "init_ray",
    "read_decisions",
    "require_ray",
    "resolve_inputs",
    "route_batch",
    "serve_deployment",
]

warnings.warn(
    "knnroute.distributed is deprecated: use knnroute.production.batch (route_batch), "
    "knnroute.evaluate.ray_eval (evaluate_ray) and knnroute.service.ray_serve (serve_deployment)",
    DeprecationWarning,
    stacklevel=2,
)

