"""The paper's §7-8 diagnostics: is a dataset local enough, and low-dimensional enough, for kNN?

- :func:`locality`: per-model score agreement of prompt pairs against their embedding distance, in
  distance bins, with the correlation ``r`` (paper Figure 1: r = -0.815 on ARC-C, -0.875 on GSM8K with
  BERT embeddings). Strongly negative ``r`` favours kNN.
- :func:`twonn`: TwoNN intrinsic dimension (Facco et al. 2017) of the embeddings (paper: 2-28 on RouterBench).
- :func:`confidence_check`: do ``KNNRouter.confidence``'s per-query signals (similarity of the k-th
  neighbour, share of neighbours whose own best model is the routed one) flag the prompts kNN routes badly?

Definitions (the paper gives the idea, not the formula; these are ours):

- distance ``d(x1, x2) = 1 - cos(x1, x2)`` (unit rows);
- agreement of a pair = ``1 - mean_m |s(x1, m) - s(x2, m)|`` over the models observed on both (scores on
  [0, 1]); for 0/1 correctness it is the fraction of models that do equally well on both prompts;
- bins: equal-count (quantile) bins of the sampled pair distances; ``r`` is Pearson's correlation between
  the bins' mean distance and mean agreement (``r_pairs`` is the pair-level correlation, much weaker
  because single pairs are noisy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.routers.curves import cost_scale, fill_missing
from knnroute.routers.knn import KNNRouter
from knnroute.routers.neighbours import search

__all__ = ["Locality", "confidence_check", "locality", "twonn"]


@dataclass(frozen=True)
class Locality:
    """Binned agreement vs distance.

    Attributes
    ----------
    bin_distance, bin_agreement : (n_bins,) float64
        Mean distance and mean agreement of the pairs in each bin (increasing distance).
    bin_count : (n_bins,) int64
    r : float
        Pearson correlation of ``bin_distance`` and ``bin_agreement``.
    r_pairs : float
        Pearson correlation over the individual pairs.
    n_pairs : int
    """

    bin_distance: NDArray[np.float64]
    bin_agreement: NDArray[np.float64]
    bin_count: NDArray[np.int64]
    r: float
    r_pairs: float
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin_distance": self.bin_distance.tolist(),
            "bin_agreement": self.bin_agreement.tolist(),
            "bin_count": self.bin_count.tolist(),
            "r": self.r,
            "r_pairs": self.r_pairs,
            "n_pairs": self.n_pairs,
        }


def _pearson(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def locality(
    X: ArrayLike,
    scores: ArrayLike,
    n_pairs: int = 200_000,
    n_bins: int = 10,
    seed: int = 0,
) -> Locality:
    """Agreement of per-model scores vs embedding distance over random prompt pairs.

    Parameters
    ----------
    X : (n, d) float, rows normalised here
    scores : (n, M) float on [0, 1], NaN = missing (pairs compare only models observed on both)
    n_pairs : int
        Random distinct pairs sampled (all pairs when there are fewer).
    n_bins : int
        Equal-count distance bins.
    seed : int
    """
    x = np.asarray(X, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n = x.shape[0]
    if n < 2 or s.shape[0] != n:
        raise ValueError("need at least 2 prompts and one score row per embedding row")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    total = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    if total <= n_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, size=n_pairs)
        j = rng.integers(0, n - 1, size=n_pairs)
        j = np.where(j >= i, j + 1, j)  # distinct partner, uniform over the others
    dist = 1.0 - np.einsum("ij,ij->i", x[i], x[j])
    both = ~np.isnan(s[i]) & ~np.isnan(s[j])
    diff = np.where(both, np.abs(np.nan_to_num(s[i]) - np.nan_to_num(s[j])), 0.0)
    cnt = both.sum(axis=1)
    keep = cnt > 0
    agree = 1.0 - diff[keep].sum(axis=1) / cnt[keep]
    dist = dist[keep]
    order = np.argsort(dist, kind="stable")
    chunks = np.array_split(order, n_bins)
    bd = np.array([dist[c].mean() for c in chunks if c.size])
    ba = np.array([agree[c].mean() for c in chunks if c.size])
    bc = np.array([c.size for c in chunks if c.size], dtype=np.int64)
    return Locality(bd, ba, bc, _pearson(bd, ba), _pearson(dist, agree), int(dist.size))


def twonn(X: ArrayLike, discard: float = 0.1) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017).

    For each point, ``mu = r2 / r1`` (Euclidean distances to its two nearest other points; points with a
    duplicate, ``r1 = 0``, are dropped). ``mu`` is Pareto with exponent ``d``: the estimate is the slope
    through the origin of ``-log(1 - F(mu))`` against ``log(mu)`` on the empirical CDF, discarding the
    largest ``discard`` fraction of ``mu`` (the paper's recommended fit).

    Parameters
    ----------
    X : (n, d) float, rows normalised here (the distances are those of the cosine geometry)
    """
    x = np.ascontiguousarray(X, dtype=np.float32)
    n = x.shape[0]
    if n < 4:
        raise ValueError("TwoNN needs at least 4 points")
    idx, sim = search(x, x, 3)  # self (usually first), then the two nearest others
    rows = np.arange(n)[:, None]
    other = idx != rows
    # Keep the first two non-self neighbours of each row (self may be missing when duplicates tie).
    pos = np.cumsum(other, axis=1)
    pick = other & (pos <= 2)
    sims = np.where(pick, sim.astype(np.float64), np.nan)
    two = np.sort(-sims, axis=1)[:, :2] * -1.0  # the two largest similarities (nearest first)
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * two, 0.0))
    r1, r2 = d2[:, 0], d2[:, 1]
    ok = np.isfinite(r1) & np.isfinite(r2) & (r1 > 1e-6)
    mu = np.sort(r2[ok] / r1[ok])
    m = mu.size
    if m < 3:
        return float("nan")
    f = np.arange(1, m + 1) / m
    keep = slice(0, max(2, int(np.floor(m * (1.0 - discard)))))
    xs = np.log(mu[keep])
    ys = -np.log(1.0 - f[keep])
    return float(np.dot(xs, ys) / np.dot(xs, xs))


def confidence_check(
    X_train: ArrayLike,
    scores_train: ArrayLike,
    costs_train: ArrayLike,
    X_test: ArrayLike,
    scores_test: ArrayLike,
    costs_test: ArrayLike,
    k: int = 100,
    lam_n: float = 0.5,
) -> dict[str, float]:
    """Does the confidence signal flag the queries kNN routes badly?

    Routes the test prompts with the uniform kNN (``k`` capped at the training size) at the normalised
    trade-off ``lam_n`` (``lambda = lam_n / c_max``) and measures each prompt's regret,
    ``100 * (u(best) - u(routed))`` with ``u = s - lambda c`` on the filled truth. Reports the mean regret
    of the half of the prompts with high vs low neighbour agreement and near vs far k-th neighbour, and
    Pearson correlations of regret with both signals. A useful signal has more regret where agreement is
    low and where the k-th neighbour is far.
    """
    s_tr = np.ascontiguousarray(scores_train, dtype=np.float32)
    kk = int(min(k, s_tr.shape[0]))
    router = KNNRouter(k=kk).fit(X_train, s_tr, np.ascontiguousarray(costs_train, dtype=np.float32))
    ts, tc = fill_missing(scores_test, costs_test)
    c_max = cost_scale(tc)
    lam = lam_n / c_max
    sig = router.confidence(X_test, lam)
    routed = sig["model"]
    u = 100.0 * (ts - lam * tc)
    rows = np.arange(ts.shape[0])
    regret = u.max(axis=1) - u[rows, routed]
    kth = 1.0 - sig["kth_similarity"].astype(np.float64)
    agree = sig["agreement"].astype(np.float64)
    hi = agree >= np.median(agree)
    far = kth > np.median(kth)
    return {
        "k": float(kk),
        "lam_n": float(lam_n),
        "mean_regret": float(regret.mean()),
        "regret_high_agreement": float(regret[hi].mean()) if hi.any() else float("nan"),
        "regret_low_agreement": float(regret[~hi].mean()) if (~hi).any() else float("nan"),
        "regret_near": float(regret[~far].mean()) if (~far).any() else float("nan"),
        "regret_far": float(regret[far].mean()) if far.any() else float("nan"),
        "r_regret_agreement": _pearson(agree, regret),
        "r_regret_kth_distance": _pearson(kth, regret),
        "mean_kth_distance": float(kth.mean()),
        "mean_agreement": float(np.mean(agree)),
    }
