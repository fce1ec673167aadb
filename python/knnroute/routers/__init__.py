"""Routers: the kNN router on the compiled core, the tuned kNN, and the learned baselines.

``make_router(name)`` builds any router by its command-line / JSON name:
``knn-<k>`` (e.g. ``knn-10``, ``knn-100``), ``knn-tuned`` (k, weighting and shrinkage chosen on the
validation split) and the baselines (``linear``, ``linear-mf``, ``mlp``, ``mlp-mf``, ``graph-10``,
``graph-100``, ``attn-10``, ``attn-100``, ``dattn-10``, ``dattn-100``). Reference rows (``oracle``,
``random``, ``best-single``) are not routers; :mod:`knnroute.evaluate` computes them.

Modules: :mod:`~knnroute.routers.base` (Router protocol, parameters, validation, seeding, routing),
:mod:`~knnroute.routers.knn` (``KNNRouter``), :mod:`~knnroute.routers.tuned` (``TunedKNNRouter``),
:mod:`~knnroute.routers.linear`, :mod:`~knnroute.routers.mlp`, :mod:`~knnroute.routers.torch_routers`
(trainer :mod:`~knnroute.routers.torch_base`, networks :mod:`~knnroute.routers.torch_nets`, which alone
imports torch), :mod:`~knnroute.routers.selection`, :mod:`~knnroute.routers.registry`, and the helpers
:mod:`~knnroute.routers.neighbours`, :mod:`~knnroute.routers.training`, :mod:`~knnroute.routers.curves`.
"""

from __future__ import annotations

from typing import Any

from knnroute.routers.base import NotFittedError
from knnroute.routers.knn import KNNRouter
from knnroute.routers.registry import BASELINE_FACTORIES  # imports neither torch nor scikit-learn

KNN_NAMES = ["knn-10", "knn-100", "knn-tuned"]
REFERENCE_NAMES = ["oracle", "random", "best-single"]


def baseline_names() -> list[str]:
    """Names of the learned baselines."""
    return list(BASELINE_FACTORIES)


def router_names() -> list[str]:
    """Every router name accepted by :func:`make_router`, plus the reference rows first."""
    return [*REFERENCE_NAMES, *KNN_NAMES, *baseline_names()]


def make_router(name: str, **params: Any) -> Any:
    """Build a router by name (see the module docstring); ``params`` go to its constructor."""
    if name.startswith("knn-") and name[4:].isdigit():
        return KNNRouter(k=int(name[4:]), **params)
    if name == "knn-tuned":
        from knnroute.routers.tuned import TunedKNNRouter

        return TunedKNNRouter(**params)
    if name in BASELINE_FACTORIES:
        return BASELINE_FACTORIES[name](**params)
    if name in REFERENCE_NAMES:
        raise ValueError(f"{name!r} is a reference row computed by knnroute.evaluate, not a router to fit")
    raise ValueError(f"unknown router {name!r}; known: {', '.join(router_names())}")


__all__ = ["KNNRouter", "NotFittedError", "make_router", "router_names", "baseline_names", "KNN_NAMES",
           "REFERENCE_NAMES"]
