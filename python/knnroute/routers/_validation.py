"""Deprecated location of the input checks: import them from :mod:`knnroute.routers.base`.

Kept importable (without a warning, while ``knnroute.production`` still imports it) for code written
against the old path.
"""

from __future__ import annotations

from knnroute.routers.base import (
    NotFittedError,
    as_queries,
    check_outcomes,
    lam_array,
    resolve_model_names,
)

__all__ = ["NotFittedError", "as_queries", "check_outcomes", "lam_array", "resolve_model_names"]
