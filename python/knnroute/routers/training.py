"""Helpers shared by the learned routers' ``fit``: target scaling, the early-stopping hold-out, BLAS threads.

Target scaling
--------------
Costs are USD per query (from about 1e-5 to a few 1e-2 on the RouterBench subset), far too small for an
unscaled squared loss next to scores on [0, 1], and there the most expensive model costs 50x (ARC-C,
Winogrande) to 190x (MBPP) the cheapest on average. Every learned router therefore fits the per-model
z-score ``(c - mean_m) / std_m`` (:func:`column_stats`: mean and standard deviation over the model's
observed training cells) and maps predictions back with ``mean_m + std_m * z``. The per-model mean is then
free (an intercept), and each model's cost variation weighs the same in the loss. A linear scale, not
log-cost, keeps ``c_hat`` an estimate of the *expected* cost, which is what the routing objective uses.
Predicted costs are clipped at 0 (costs are non-negative by contract).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = ["column_stats", "internal_split", "one_blas_thread", "score_means"]


def column_stats(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (floored) standard deviation over the observed (non-NaN) cells, ``(M,)`` each.

    Used for the per-model z-scaling of costs (and of scores where a router scales them). A column with no
    observed cell gets the mean over all observed cells (0 if there are none). The standard deviation is
    floored at ``1e-3 * |mean|`` (and 1e-12) so a constant column maps to z = 0 instead of dividing by 0.
    """
    obs = np.isfinite(C)
    counts = obs.sum(axis=0)
    global_mean = float(C[obs].mean()) if obs.any() else 0.0
    sums = np.where(obs, C, 0.0).sum(axis=0)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
    sq = np.where(obs, (C - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(sq / np.maximum(counts, 1))
    std = np.maximum(std, np.maximum(1e-3 * np.abs(mean), 1e-12))
    return mean, std


def score_means(S: np.ndarray) -> np.ndarray:
    """Per-model mean observed score ``(M,)``; a model with no observed score gets 0 (missing counts as 0)."""
    obs = np.isfinite(S)
    counts = obs.sum(axis=0)
    return np.where(counts > 0, np.where(obs, S, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)


def internal_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row indices for early stopping when no validation data was given.

    Returns an empty validation part when ``n < 10`` (too few rows to hold any out).
    """
    if n < 10:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(fraction * n)), n - 2)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def one_blas_thread() -> Any:
    """A context limiting BLAS to one thread (a no-op without threadpoolctl, which ships with sklearn).

    d x d factorisations (d ~ 384..768) are too small to gain from BLAS threads; on a busy 2-core machine
    the threaded OpenBLAS Cholesky was ~10x slower than the single-threaded one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
