"""The paper's selection-based protocol (appendix D), reported apart from the AUC.

At three trade-offs, normalised by ``c_max``: low cost ``lambda = 1.0 / c_max``, balanced ``0.5 / c_max``,
high performance ``0.1 / c_max``, a router picks one model per test prompt and earns the utility
``100 * mean(s - lambda c)`` = ``100 * (mean score - lambda_n * mean cost / c_max)``, with scores on [0, 1].
The table cell is the mean over the three settings. The paper calls this protocol misleading (a high number
can come from always picking an expensive model); it is here for comparison with its Tables D.1/D.2 only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.evaluate.references import N_RANDOM, random_picks
from knnroute.routers.base import route_predictions

__all__ = [
    "SELECTION_LAMBDAS",
    "best_single_selection",
    "oracle_selection",
    "random_selection",
    "selection_from_predictions",
    "selection_from_routes",
    "selection_scores",
    "utility",
]

SELECTION_LAMBDAS: tuple[float, ...] = (1.0, 0.5, 0.1)


def _key(lam_n: float) -> str:
    return f"sel_{lam_n:g}"


def utility(idx: ArrayLike, scores: ArrayLike, costs: ArrayLike, lam_n: float, c_max: float) -> float:
    """``100 * mean(s - (lam_n / c_max) c)`` of the picked models ``idx`` (n,) on the filled truth."""
    ix = np.asarray(idx, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    rows = np.arange(s.shape[0])
    return float(100.0 * (s[rows, ix].mean() - lam_n * c[rows, ix].mean() / c_max))


def selection_scores(
    route_at: Callable[[float], NDArray[np.int64]],
    scores: ArrayLike,
    costs: ArrayLike,
    c_max: float,
    lambdas: Sequence[float] = SELECTION_LAMBDAS,
) -> dict[str, float]:
    """Utilities of a router at each normalised lambda plus their mean (``sel_mean``).

    ``route_at(lam)`` returns the picked model per test prompt at ``lam`` in USD units (score on [0, 1]
    per USD), i.e. it is called with ``lam_n / c_max``.
    """
    picks = np.stack([np.asarray(route_at(ln / c_max)).ravel() for ln in lambdas], axis=1)
    return selection_from_routes(picks, scores, costs, c_max, lambdas)


def selection_from_routes(
    picks: ArrayLike,
    scores: ArrayLike,
    costs: ArrayLike,
    c_max: float,
    lambdas: Sequence[float] = SELECTION_LAMBDAS,
) -> dict[str, float]:
    """Utilities from the picks ``(n, L)`` made at ``lambdas[l] / c_max``, plus their mean."""
    p = np.asarray(picks, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != len(lambdas):
        raise ValueError(f"picks must be (n, {len(lambdas)}), one column per lambda; got {p.shape}")
    out = {_key(ln): utility(p[:, j], scores, costs, ln, c_max) for j, ln in enumerate(lambdas)}
    out["sel_mean"] = float(np.mean([out[_key(ln)] for ln in lambdas]))
    return out


def _route(s_hat: ArrayLike, c_hat: ArrayLike, lam: float) -> NDArray[np.int64]:
    return route_predictions(s_hat, c_hat, np.array([lam], dtype=np.float64))[:, 0]


def selection_from_predictions(
    s_hat: ArrayLike,
    c_hat: ArrayLike,
    scores: ArrayLike,
    costs: ArrayLike,
    c_max: float,
    lambdas: Sequence[float] = SELECTION_LAMBDAS,
) -> dict[str, float]:
    """A utility-prediction router used as a selector: ``argmax s_hat - lambda c_hat`` at each lambda."""
    return selection_scores(lambda lam: _route(s_hat, c_hat, lam), scores, costs, c_max, lambdas)


def oracle_selection(
    scores: ArrayLike, costs: ArrayLike, c_max: float, lambdas: Sequence[float] = SELECTION_LAMBDAS
) -> dict[str, float]:
    """The true-utility argmax per prompt (the ceiling of the protocol)."""
    return selection_from_predictions(scores, costs, scores, costs, c_max, lambdas)


def random_selection(
    scores: ArrayLike,
    costs: ArrayLike,
    c_max: float,
    seed: int = 0,
    n_random: int = N_RANDOM,
    lambdas: Sequence[float] = SELECTION_LAMBDAS,
) -> dict[str, float]:
    """Uniform random picks (independent of lambda), mean over ``n_random`` repeats."""
    s = np.asarray(scores)
    picks = [random_picks(s.shape[0], s.shape[1], seed, r) for r in range(n_random)]
    out = {_key(ln): float(np.mean([utility(p, scores, costs, ln, c_max) for p in picks])) for ln in lambdas}
    out["sel_mean"] = float(np.mean([out[_key(ln)] for ln in lambdas]))
    return out


def best_single_selection(
    scores: ArrayLike, costs: ArrayLike, c_max: float, lambdas: Sequence[float] = SELECTION_LAMBDAS
) -> dict[str, float]:
    """At each lambda, the single model with the best test utility (a prompt-blind upper reference)."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    out = {_key(ln): float(100.0 * np.max(s.mean(axis=0) - ln * c.mean(axis=0) / c_max)) for ln in lambdas}
    out["sel_mean"] = float(np.mean([out[_key(ln)] for ln in lambdas]))
    return out
