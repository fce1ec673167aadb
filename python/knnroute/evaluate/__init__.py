"""Evaluation: cost-quality curves, hull AUC, reference rows, tuning, repeats, diagnostics, plots, reports.

Modules (import the one you need; importing this package imports nothing heavy):

- :mod:`~knnroute.evaluate.curves`: any router's curve on a test set and the gain; the curve machinery
  (exact lambda sweep or a grid, the non-decreasing convex hull with the (0, 0) anchor, AUC over
  cost / c_max) is :mod:`knnroute.routers.curves`, re-exported there.
- :mod:`~knnroute.evaluate.references`: Oracle, Random (mean of 10 seeds), Best-single hull, single models.
- :mod:`~knnroute.evaluate.savings`: the cost share at which a router's hull matches the best single model's
  quality (and the dollars saved per 1,000 queries), and its quality at the cheapest model's cost.
- :mod:`~knnroute.evaluate.appendix_d`: the paper's appendix-D protocol (utility at lambda = 1, 0.5, 0.1
  over c_max), reported apart from the AUC.
- ``knn-tuned`` (k, weighting, shrinkage by validation AUC) is :mod:`knnroute.routers.tuned`
  (``knnroute.evaluate.tuning`` is a deprecated alias).
- :mod:`~knnroute.evaluate.runner`: ``run_one(data, router, seed)`` (pure) and the dataset x router x seed
  grid as flat records; one cell's work is :mod:`~knnroute.evaluate.cell` (multimodal views:
  :mod:`~knnroute.evaluate.views`).
- :mod:`~knnroute.evaluate.parallel`: the same grid on a local process pool (``knnroute eval --jobs N``).
- :mod:`~knnroute.evaluate.diagnostics`: locality (agreement vs distance, r), TwoNN, confidence signals.
- :mod:`~knnroute.evaluate.plots`, :mod:`~knnroute.evaluate.report`: PNGs, tables, JSON.

The ``knnroute eval`` command is :mod:`knnroute.commands.eval`.

Conventions: ``python/knnroute/evaluate/README.md`` § Conventions, the same as
:data:`knnroute.evaluate.report.CONVENTIONS` and written into every JSON report.
"""

from __future__ import annotations

__all__ = [
    "appendix_d",
    "cell",
    "curves",
    "diagnostics",
    "ood",
    "parallel",
    "plots",
    "ray_eval",
    "references",
    "report",
    "runner",
    "savings",
    "views",
]
