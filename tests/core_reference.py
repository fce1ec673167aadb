"""Small, slow, obviously-correct references for the compiled core (NumPy and pure Python)."""

from __future__ import annotations

import numpy as np


def normalize(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def cosine(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    """float64 cosine similarities (B, N)."""
    return normalize(Q) @ normalize(X).T


def topk(Q: np.ndarray, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by float64 cosine, ties to the lower index (stable sort on -sim)."""
    S = cosine(Q, X)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(S, idx, axis=1)


def aggregate(idx, sim, scores, costs, weighting="uniform", temperature=0.05, shrinkage=0.0):
    scores = np.asarray(scores, np.float64)
    costs = np.asarray(costs, np.float64)
    prior_s = np.array([np.nanmean(c) if np.isfinite(c).any() else 0.0 for c in scores.T])
    prior_c = np.array([np.nanmean(c) if np.isfinite(c).any() else 0.0 for c in costs.T])
    B, k = idx.shape
    M = scores.shape[1]
    s_hat = np.empty((B, M))
    c_hat = np.empty((B, M))
    for b in range(B):
        sb = sim[b].astype(np.float64)
        if weighting == "uniform":
            w = np.ones(k)
        elif weighting == "similarity":
            w = np.maximum(sb, 0.0)
        else:
            w = np.exp((sb - sb.max()) / temperature)
        for out, table, prior in ((s_hat, scores, prior_s), (c_hat, costs, prior_c)):
            vals = table[idx[b]]  # (k, M)
            obs = ~np.isnan(vals)
            num = (np.where(obs, vals, 0.0) * w[:, None]).sum(0) + shrinkage * prior
            den = (obs * w[:, None]).sum(0) + shrinkage
            out[b] = np.where(den > 0, num / np.where(den > 0, den, 1.0), prior)
    return s_hat, c_hat


def route(s_hat, c_hat, lams):
    """argmax s - lam c in float64; ties to the cheaper model, then the lower index."""
    s = np.asarray(s_hat, np.float64)
    c = np.asarray(c_hat, np.float64)
    out = np.empty((s.shape[0], len(lams)), np.int64)
    for b in range(s.shape[0]):
        for j, lam in enumerate(lams):
            u = s[b] - lam * c[b]
            best = 0
            for m in range(1, s.shape[1]):
                if u[m] > u[best] or (u[m] == u[best] and c[b, m] < c[b, best]):
                    best = m
            out[b, j] = best
    return out


# --- pure-Python hull / AUC (a different algorithm from the core's monotone chain) ---------------

def _concave_majorant(points: list[tuple[float, float]], x: float) -> float:
    """max over pairs (i, j) with x_i <= x <= x_j of the chord value at x: O(P^2)."""
    best = -float("inf")
    for xi, yi in points:
        for xj, yj in points:
            if xi <= x <= xj:
                if xj == xi:
                    val = max(yi, yj)
                else:
                    t = (x - xi) / (xj - xi)
                    val = yi + t * (yj - yi)
                best = max(best, val)
    return best


def hull_auc_py(costs, scores, c_max: float) -> float:
    """Area under the running max of the concave majorant of the points + (0, 0), x = cost / c_max,
    over [0, 1], flat beyond the last point. Exact for piecewise-linear pieces between point x's."""
    pts = [(0.0, 0.0)] + [(float(c) / c_max, float(s)) for c, s in zip(costs, scores)]
    xs = sorted({p[0] for p in pts})
    # g(x) = max_{x' <= x} f(x'), with f the concave majorant on [0, max x]; flat after max x.
    grid = sorted({x for x in xs if x <= 1.0} | ({1.0} if xs[-1] > 1.0 else set()))
    def g(x: float) -> float:
        cand = [_concave_majorant(pts, xx) for xx in xs if xx <= x] + [_concave_majorant(pts, x)]
        return max(cand)
    area = 0.0
    for a, b in zip(grid, grid[1:]):
        area += 0.5 * (g(a) + g(b)) * (b - a)
    last = grid[-1]
    if last < 1.0:
        area += g(last) * (1.0 - last)
    return area
