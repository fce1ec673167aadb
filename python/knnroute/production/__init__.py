"""The production router and what it needs: budgets, fallback, the lock, router files, batch routing.

:class:`ProductionRouter` (:mod:`.router`) = a :class:`~knnroute.embed.prompt.PromptEncoder` + a fitted
:class:`~knnroute.routers.knn.KNNRouter` + budgets (:mod:`.budgets`) + a fallback policy
(:mod:`.fallback`) + live updates guarded by :mod:`.lock`. Router files: the format (plain state in and
out) in :mod:`.persist`, ``save`` / ``load`` / ``loads`` in :mod:`.files`. Batch routing of files (local or
Ray Data) in :mod:`.batch` (not imported here).
"""

from __future__ import annotations

from knnroute.production.budgets import MAX_BUDGET_POINTS, BudgetPoint, BudgetTable
from knnroute.production.fallback import FallbackPolicy
from knnroute.production.files import load, loads, save
from knnroute.production.persist import FORMAT_VERSION, MAGIC, PRECISIONS, RouterFileError, read_metadata
from knnroute.production.router import ProductionRouter, RouteDecision

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BUDGET_POINTS",
    "PRECISIONS",
    "BudgetPoint",
    "BudgetTable",
    "FallbackPolicy",
    "ProductionRouter",
    "RouteDecision",
    "RouterFileError",
    "load",
    "loads",
    "read_metadata",
    "save",
]
