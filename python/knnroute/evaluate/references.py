"""Reference rows of every table: Oracle, Random, Best-single hull and each single model.

All take the filled test truth (:func:`knnroute.evaluate.curves.fill_missing`): ``scores`` (n, M) on [0, 1],
``costs`` (n, M) USD, and the cost normalisation ``c_max``.

- **Oracle**: routes with the true utilities, ties to the cheaper model; it is the exact sweep with
  predicted = true, so its first point (lambda = 0) sends each prompt to the cheapest model that gets the
  best score on it.
- **Random**: each prompt goes to a model drawn uniformly at random. One seed gives one point (mean true
  cost, mean true score); its hull is the segment from the null router (0, 0) to that point, extended flat,
  so ``AUC = s_r (1 - x_r / 2)`` with ``x_r = c_r / c_max``. The row is the mean AUC over ``n_random`` seeds.
  This is our reading of the paper's Random row (its Table E.1 does not define it); a "random utilities"
  sweep would trace many points and land a few points higher.
- **Best-single**: the hull of the single models' points (a router that ignores the prompt, mixing at
  most two models at random to realise points between them).
- **single:<model>**: the hull of one model's point with (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.evaluate.curves import SCORE_SCALE, Curve, curve_from_points, curve_from_predictions

__all__ = [
    "N_RANDOM",
    "RandomResult",
    "best_single_curve",
    "oracle_curve",
    "random_picks",
    "random_router",
    "single_model_curves",
    "single_model_points",
]

N_RANDOM = 10


def oracle_curve(scores: ArrayLike, costs: ArrayLike, c_max: float, lams: ArrayLike | None = None) -> Curve:
    """The Oracle's curve: the sweep of the true utilities (exact over all lambda unless a grid is given)."""
    return curve_from_predictions(scores, costs, scores, costs, c_max, lams=lams)


def random_picks(n: int, n_models: int, seed: int, repeat: int) -> NDArray[np.int64]:
    """The random router's model per prompt for one (split seed, repeat): uniform, reproducible."""
    rng = np.random.default_rng([int(seed), int(repeat), 0x52414E44])  # 'RAND': a stream of its own
    return rng.integers(0, n_models, size=n).astype(np.int64)


@dataclass(frozen=True)
class RandomResult:
    """Random router over ``n_random`` repeats: the mean AUC and one curve (a single point) per repeat."""

    auc: float
    aucs: NDArray[np.float64]
    curves: list[Curve]

    @property
    def cost(self) -> NDArray[np.float64]:
        return np.array([c.cost[0] for c in self.curves])

    @property
    def score(self) -> NDArray[np.float64]:
        return np.array([c.score[0] for c in self.curves])


def random_router(
    scores: ArrayLike, costs: ArrayLike, c_max: float, seed: int = 0, n_random: int = N_RANDOM
) -> RandomResult:
    """The Random row: mean AUC of ``n_random`` uniform-random routers (one point each)."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    rows = np.arange(s.shape[0])
    curves = []
    for r in range(n_random):
        pick = random_picks(s.shape[0], s.shape[1], seed, r)
        curves.append(
            curve_from_points([c[rows, pick].mean()], [SCORE_SCALE * s[rows, pick].mean()], c_max, repeat=r)
        )
    aucs = np.array([cv.auc for cv in curves])
    return RandomResult(auc=float(aucs.mean()), aucs=aucs, curves=curves)


def single_model_points(
    scores: ArrayLike, costs: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each model's (mean true cost, mean true score x100) on the test set: two (M,) arrays."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    return c.mean(axis=0), SCORE_SCALE * s.mean(axis=0)


def best_single_curve(scores: ArrayLike, costs: ArrayLike, c_max: float) -> Curve:
    """The Best-single hull: the hull of the single models' points (with the (0, 0) anchor)."""
    pc, ps = single_model_points(scores, costs)
    return curve_from_points(pc, ps, c_max)


def single_model_curves(scores: ArrayLike, costs: ArrayLike, c_max: float) -> list[Curve]:
    """One curve per model: its point, hulled with (0, 0)."""
    pc, ps = single_model_points(scores, costs)
    return [curve_from_points([pc[m]], [ps[m]], c_max, model=m) for m in range(pc.size)]
