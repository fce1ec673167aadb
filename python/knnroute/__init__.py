"""knnroute: pick the best LLM for each prompt with an exact kNN router.

The compiled core lives in :mod:`knnroute_core` (import it alone on hot paths). This package is the
friendly layer: routers, data loading, embedding, evaluation, CLI and service. Importing it is cheap:
heavy dependencies (torch, sentence-transformers, scikit-learn, matplotlib, web frameworks, ray) are
imported inside the functions that need them.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

try:  # one source: pyproject.toml's [project] version, as installed
    __version__ = _dist_version("knnroute")
except PackageNotFoundError:  # a source tree on sys.path without the distribution: the core's copy
    from knnroute_core import __version__

# Public names, resolved lazily (PEP 562) so `import knnroute` stays light.
_LAZY = {
    "KNNRouter": ("knnroute.routers.knn", "KNNRouter"),
    "make_router": ("knnroute.routers", "make_router"),
    "RoutingDataset": ("knnroute.data", "RoutingDataset"),
    "load": ("knnroute.production", "load"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'knnroute' has no attribute {name!r}") from None
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
