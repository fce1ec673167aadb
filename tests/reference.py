"""NumPy (and pure-Python) references for every function of :mod:`knnroute_core`, for the tests only.

The product has one kNN engine, the compiled core; these are the definitions it is checked against (tests,
``bench/bench_eval.py``). They favour clarity over speed, except the sweep, which is vectorised over queries
so it stays usable on real data.

- search: :func:`topk` (float64 cosine, stable sort: higher similarity first, then lower index);
- aggregation: :func:`aggregate` (uniform / similarity / softmax weights, shrinkage toward the priors);
  per-model neighbourhoods: :func:`topk_per_model` (each model's k nearest rows among those that observed
  it), :func:`radius_lists` (widened to one common radius), :func:`predict_per_model` (aggregation over
  them, time decay, count and spread);
- routing: :func:`route`; :func:`confidence` (``KNNRouter.confidence``'s signals);
- curves: :func:`envelope`, :func:`sweep`, :func:`sweep_grid`, :func:`nondecreasing_hull`, :func:`hull_auc`
  (monotone chain) and :func:`hull_auc_py` (an O(P^2) concave majorant: a different algorithm),
  :func:`dense_grid_auc` (the paper's dense-grid protocol).

Conventions (``python/knnroute/evaluate/README.md`` § Conventions):

- Routing: ``argmax_m s[m] - lam * c[m]``; ties go to the cheaper model, then to the lower index.
- Envelope: for one query the winning model as a function of ``lam >= 0`` is piecewise constant; model
  ``models[j]`` wins on ``[lams[j], lams[j + 1])`` (at a breakpoint the tie rule hands the win to the cheaper,
  incoming model), ``lams[0] == 0``.
- Sweep: the curve of (mean true cost, mean true score) over all ``lam >= 0`` has one point per distinct
  breakpoint of the union of the per-query envelopes (plus ``lam = 0``).
- Hull: upper convex hull of the points plus the null router ``(0, 0)``, cut after its highest score and
  extended flat to the right (RouterBench's non-decreasing convex hull).
- AUC: area under the hull over normalised cost ``c / c_max`` in ``[0, 1]`` (points beyond ``c_max`` are
  clipped by the integration domain), in the units of the scores (x100 scores give AUC in ``[0, 100]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.routers.curves import column_means, dense_lambda_grid

__all__ = [
    "aggregate",
    "column_means",
    "confidence",
    "cosine",
    "dense_grid_auc",
    "dense_lambda_grid",
    "envelope",
    "hull_auc",
    "hull_auc_py",
    "nondecreasing_hull",
    "normalize",
    "route",
    "sweep",
    "sweep_grid",
    "topk",
    "topk_cosine",
]


def _as_2d(a: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (queries, models); got shape {arr.shape}")
    return arr


def route(s_hat: ArrayLike, c_hat: ArrayLike, lams: ArrayLike) -> NDArray[np.int64]:
    """Winning model per query and lambda.

    Parameters
    ----------
    s_hat, c_hat : (B, M) float
        Predicted (or true) scores and costs. NaN is not allowed.
    lams : (L,) float, ``>= 0``

    Returns
    -------
    (B, L) int64
        ``argmax_m s_hat[b, m] - lams[l] * c_hat[b, m]``; ties to the lower cost, then the lower index.
    """
    s = _as_2d(s_hat, "s_hat")
    c = _as_2d(c_hat, "c_hat")
    lam = np.atleast_1d(np.asarray(lams, dtype=np.float64))
    if s.shape != c.shape:
        raise ValueError(f"s_hat {s.shape} and c_hat {c.shape} must have the same shape")
    b, m = s.shape
    # Pre-order models per query by (cost, index) so a stable argmax over that order implements the tie rule.
    order = np.lexsort((np.broadcast_to(np.arange(m), (b, m)), c), axis=1)
    s_o = np.take_along_axis(s, order, axis=1)
    c_o = np.take_along_axis(c, order, axis=1)
    util = s_o[:, None, :] - lam[None, :, None] * c_o[:, None, :]  # (B, L, M)
    first = np.argmax(util, axis=2)  # argmax returns the first maximum: the cheapest, then lowest index
    return np.take_along_axis(order, first, axis=1).astype(np.int64)


def envelope(s_hat: ArrayLike, c_hat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Upper envelope of the lines ``s[m] - lam * c[m]`` for ``lam >= 0`` (one query).

    Returns
    -------
    lams : (J,) float64
        ``lams[0] == 0``; strictly increasing.
    models : (J,) int64
        ``models[j]`` wins for ``lam`` in ``[lams[j], lams[j + 1])``; costs strictly decrease along it.
    """
    s = np.asarray(s_hat, dtype=np.float64).ravel()
    c = np.asarray(c_hat, dtype=np.float64).ravel()
    if s.shape != c.shape or s.size == 0:
        raise ValueError("s_hat and c_hat must be non-empty vectors of the same length")
    cur = int(route(s[None], c[None], [0.0])[0, 0])
    lams = [0.0]
    models = [cur]
    while True:
        cheaper = np.flatnonzero(c < c[cur])
        if cheaper.size == 0:
            break
        # Line m overtakes the current one at lam = (s_cur - s_m) / (c_cur - c_m) (>= 0 on the envelope).
        cross = (s[cur] - s[cheaper]) / (c[cur] - c[cheaper])
        cross = np.maximum(cross, lams[-1])
        best = cross.min()
        tied = cheaper[cross == best]
        # Several lines crossing at once: the cheapest wins at and after the crossing (then lowest index).
        nxt = int(tied[np.lexsort((tied, c[tied]))[0]])
        if best == lams[-1]:
            # Rounding put the crossing at (or, clamped, below) the last breakpoint: the winner there changes.
            models[-1] = nxt
        else:
            lams.append(float(best))
            models.append(nxt)
        cur = nxt
    return np.asarray(lams, dtype=np.float64), np.asarray(models, dtype=np.int64)


def _envelopes_batch(
    s: NDArray[np.float64], c: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Envelopes of many queries at once (vectorised walk; at most M steps).

    Returns the breakpoint events ``(lam, query, from_model, to_model)``, all with ``lam > 0``: the winner at
    ``lam = 0`` is the cheapest maximiser, so every cheaper line is strictly below it there.
    """
    b, m = s.shape
    cur = route(s, c, [0.0])[:, 0]
    last = np.zeros(b)
    active = np.ones(b, dtype=bool)
    ev_lam: list[NDArray[np.float64]] = []
    ev_q: list[NDArray[np.int64]] = []
    ev_from: list[NDArray[np.int64]] = []
    ev_to: list[NDArray[np.int64]] = []
    rows = np.arange(b)
    idx = np.broadcast_to(np.arange(m), (b, m))
    for _ in range(m):
        if not active.any():
            break
        sc = s[rows, cur][:, None]
        cc = c[rows, cur][:, None]
        cheaper = c < cc
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(cheaper, (sc - s) / (cc - c), np.inf)
        cross = np.maximum(cross, last[:, None])
        best = cross.min(axis=1)
        has = np.isfinite(best) & active
        # Among lines crossing at `best`, the cheapest (then lowest index) takes over.
        key_c = np.where(cross == best[:, None], c, np.inf)
        min_c = key_c.min(axis=1)
        cand = np.where((cross == best[:, None]) & (c == min_c[:, None]), idx, m)
        nxt = cand.min(axis=1)
        # Rounding can put a crossing a hair below the previous breakpoint; the clamp above records it at
        # that breakpoint, where events of one query telescope (a->b, b->c).
        q = np.flatnonzero(has)
        ev_lam.append(best[q])
        ev_q.append(q)
        ev_from.append(cur[q].copy())
        ev_to.append(nxt[q])
        cur = np.where(has, nxt, cur)
        last = np.where(has, best, last)
        active = has
    if ev_lam:
        return (
            np.concatenate(ev_lam),
            np.concatenate(ev_q).astype(np.int64),
            np.concatenate(ev_from).astype(np.int64),
            np.concatenate(ev_to).astype(np.int64),
        )
    empty_i = np.zeros(0, dtype=np.int64)
    return np.zeros(0), empty_i, empty_i, empty_i


def sweep(
    s_hat: ArrayLike, c_hat: ArrayLike, true_scores: ArrayLike, true_costs: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Exact cost-quality curve of a router over all ``lam >= 0``.

    Parameters
    ----------
    s_hat, c_hat : (B, M) float
        The router's predictions (no NaN).
    true_scores, true_costs : (B, M) float
        What each model really scores and costs on each query (no NaN; fill missing cells first).

    Returns
    -------
    lams : (P,) float64
        ``0`` then every distinct breakpoint of the per-query envelopes, increasing.
    mean_cost, mean_score : (P,) float64
        Mean true cost and score over the queries when each is routed at ``lams[p]`` (constant until
        ``lams[p + 1]``).
    """
    s = _as_2d(s_hat, "s_hat")
    c = _as_2d(c_hat, "c_hat")
    ts = _as_2d(true_scores, "true_scores")
    tc = _as_2d(true_costs, "true_costs")
    if not (s.shape == c.shape == ts.shape == tc.shape):
        raise ValueError("s_hat, c_hat, true_scores and true_costs must share one (B, M) shape")
    b = s.shape[0]
    rows = np.arange(b)
    start = route(s, c, [0.0])[:, 0]
    lam, q, frm, to = _envelopes_batch(s, c)
    d_cost = tc[q, to] - tc[q, frm]
    d_score = ts[q, to] - ts[q, frm]
    order = np.argsort(lam, kind="stable")
    lam, d_cost, d_score = lam[order], d_cost[order], d_score[order]
    uniq, first = np.unique(lam, return_index=True)
    cost0 = tc[rows, start].sum()
    score0 = ts[rows, start].sum()
    cum_c = np.add.reduceat(d_cost, first) if lam.size else np.zeros(0)
    cum_s = np.add.reduceat(d_score, first) if lam.size else np.zeros(0)
    lams = np.concatenate([[0.0], uniq])
    mean_cost = (cost0 + np.concatenate([[0.0], np.cumsum(cum_c)])) / b
    mean_score = (score0 + np.concatenate([[0.0], np.cumsum(cum_s)])) / b
    return lams, mean_cost, mean_score


def sweep_grid(
    s_hat: ArrayLike, c_hat: ArrayLike, true_scores: ArrayLike, true_costs: ArrayLike, lams: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The curve at given lambdas: ``(mean_cost (L,), mean_score (L,))`` of the routed true outcomes."""
    ts = _as_2d(true_scores, "true_scores")
    tc = _as_2d(true_costs, "true_costs")
    idx = route(s_hat, c_hat, lams)  # (B, L)
    rows = np.arange(ts.shape[0])[:, None]
    return tc[rows, idx].mean(axis=0), ts[rows, idx].mean(axis=0)


def nondecreasing_hull(
    costs: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vertices of the non-decreasing upper convex hull of the points plus ``(0, 0)``.

    Returns ``(hull_costs, hull_scores)``: increasing costs starting at ``(0, 0)`` (or at cost 0 with the best
    zero-cost score), strictly increasing scores, ending at the first point that reaches the highest score.
    The hull is implicitly flat to the right of its last vertex. Points with negative cost are rejected.
    """
    c = np.asarray(costs, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if c.shape != s.shape:
        raise ValueError(f"costs {c.shape} and scores {s.shape} must have the same length")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s))):
        raise ValueError("costs and scores must be finite (fill missing values before building a hull)")
    if np.any(c < 0):
        raise ValueError("costs must be >= 0")
    c = np.concatenate([[0.0], c])
    s = np.concatenate([[0.0], s])
    # Sort by cost, then by score descending so the best point at each cost comes first.
    order = np.lexsort((-s, c))
    c, s = c[order], s[order]
    keep = np.concatenate([[True], c[1:] != c[:-1]])
    c, s = c[keep], s[keep]
    # Monotone chain, upper hull, left to right.
    hc: list[float] = []
    hs: list[float] = []
    for ci, si in zip(c.tolist(), s.tolist(), strict=False):
        while len(hc) >= 2:
            # Pop the middle point when it lies on or below the chord (cross product >= 0).
            cross = (hc[-1] - hc[-2]) * (si - hs[-2]) - (hs[-1] - hs[-2]) * (ci - hc[-2])
            if cross >= 0:
                hc.pop()
                hs.pop()
            else:
                break
        hc.append(ci)
        hs.append(si)
    hc_a = np.asarray(hc)
    hs_a = np.asarray(hs)
    # Cut after the highest score (the first vertex reaching it); to its right the hull is flat.
    top = int(np.argmax(hs_a))
    return hc_a[: top + 1], hs_a[: top + 1]


def hull_auc(costs: ArrayLike, scores: ArrayLike, c_max: float) -> float:
    """Area under the non-decreasing convex hull of the points + ``(0, 0)``, cost normalised by ``c_max``.

    Integrates over normalised cost ``[0, 1]``; the hull is extended flat to the right of its last vertex
    and the part beyond ``c_max`` is cut off. The result is in score units (x100 scores: ``[0, 100]``).
    """
    if not np.isfinite(c_max) or c_max <= 0:
        raise ValueError(f"c_max must be a positive finite cost; got {c_max}")
    hc, hs = nondecreasing_hull(costs, scores)
    x = hc / float(c_max)
    # Extend flat to x = 1 and clip the piecewise-linear hull to [0, 1].
    x = np.concatenate([x, [max(1.0, x[-1])]])
    y = np.concatenate([hs, [hs[-1]]])
    if x[-2] > 1.0:
        # Cut inside a segment: interpolate the hull at x = 1.
        j = int(np.searchsorted(x, 1.0))  # first vertex with x >= 1 (x[0] == 0 so j >= 1)
        y1 = y[j - 1] + (y[j] - y[j - 1]) * (1.0 - x[j - 1]) / (x[j] - x[j - 1])
        x = np.concatenate([x[:j], [1.0]])
        y = np.concatenate([y[:j], [y1]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) * 0.5))


def dense_grid_auc(
    s_hat: ArrayLike,
    c_hat: ArrayLike,
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    c_max: float,
    n: int = 1000,
) -> float:
    """AUC by the paper's protocol: route on a dense lambda grid, hull, AUC (scores x100)."""
    lams = dense_lambda_grid(c_max, n)
    mc, ms = sweep_grid(s_hat, c_hat, true_scores, true_costs, lams)
    return hull_auc(mc, 100.0 * ms, c_max)


def aggregate(
    idx: ArrayLike,
    sim: ArrayLike,
    scores: ArrayLike,
    costs: ArrayLike,
    weighting: str = "uniform",
    temperature: float = 0.05,
    shrinkage: float = 0.0,
    prior_scores: ArrayLike | None = None,
    prior_costs: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Predicted score and cost per model from neighbours (NumPy reference of ``knnroute_core.aggregate``).

    Weights: ``uniform`` 1; ``similarity`` ``max(sim, 0)``; ``softmax``
    ``exp((sim - max sim) / temperature)``.
    Per query and model, over neighbours whose cell is observed (not NaN):
    ``(sum w v + shrinkage * prior) / (sum w + shrinkage)``; the prior (default: column means) when the
    denominator is 0.

    Parameters
    ----------
    idx : (B, k) int
        Neighbour rows of ``scores``/``costs``.
    sim : (B, k) float
        Their cosine similarities.
    scores, costs : (N, M) float, NaN = missing

    Returns
    -------
    s_hat, c_hat : (B, M) float64
    """
    ids = np.asarray(idx, dtype=np.int64)
    sm = np.asarray(sim, dtype=np.float64)
    if ids.ndim != 2 or sm.shape != ids.shape:
        raise ValueError(f"idx and sim must be (B, k) of one shape; got {ids.shape} and {sm.shape}")
    if weighting == "uniform":
        w = np.ones_like(sm)
    elif weighting == "similarity":
        w = np.maximum(sm, 0.0)
    elif weighting == "softmax":
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        w = np.exp((sm - sm.max(axis=1, keepdims=True)) / float(temperature))
    else:
        raise ValueError(f"weighting must be 'uniform', 'similarity' or 'softmax'; got {weighting!r}")
    out = []
    for table, prior in ((scores, prior_scores), (costs, prior_costs)):
        t = np.asarray(table, dtype=np.float64)
        p = column_means(t) if prior is None else np.asarray(prior, dtype=np.float64)
        v = t[ids]  # (B, k, M)
        obs = ~np.isnan(v)
        wv = np.where(obs, v, 0.0) * w[:, :, None]
        num = wv.sum(axis=1) + shrinkage * p
        den = (obs * w[:, :, None]).sum(axis=1) + shrinkage
        out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), p[None, :]))
    return out[0], out[1]


def topk_cosine(queries: ArrayLike, base: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Exact cosine top-k (NumPy reference): higher similarity first, then lower index."""
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    if not 1 <= k <= b.shape[0]:
        raise ValueError(f"k must be in [1, {b.shape[0]}]; got {k}")
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    out = np.empty((q.shape[0], k), dtype=np.float64)
    step = max(1, 2**24 // max(1, b.shape[0]))  # bound the (rows, N) block to ~128 MB
    for lo in range(0, q.shape[0], step):
        sim = q[lo : lo + step] @ b.T
        # A stable sort of -sim keeps equal similarities in index order: the tie rule.
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        idx[lo : lo + step] = order
        out[lo : lo + step] = np.take_along_axis(sim, order, axis=1)
    return idx, out


topk = topk_cosine


def topk_per_model(
    queries: ArrayLike, base: ArrayLike, scores: ArrayLike, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Per-model neighbourhoods (reference of ``Router.search_per_model``): for each query and model m,
    the ``min(k, rows observing m)`` nearest rows among those whose score for m is not NaN (float64
    cosine, stable order: higher similarity, then lower index). Returns idx (B, M, k) (-1 past the
    count), sim (B, M, k) (0 past the count), count (B, M)."""
    q = normalize(np.asarray(queries, dtype=np.float64))
    b = normalize(np.asarray(base, dtype=np.float64))
    obs = ~np.isnan(np.asarray(scores, dtype=np.float64))
    B, M = q.shape[0], obs.shape[1]
    sim = q @ b.T
    idx = np.full((B, M, k), -1, dtype=np.int64)
    out = np.zeros((B, M, k))
    cnt = np.zeros((B, M), dtype=np.int64)
    for m in range(M):
        rows = np.flatnonzero(obs[:, m])
        if len(rows) == 0:
            continue
        order = np.argsort(-sim[:, rows], axis=1, kind="stable")[:, :k]
        c = order.shape[1]
        idx[:, m, :c] = rows[order]
        out[:, m, :c] = np.take_along_axis(sim[:, rows], order, axis=1)
        cnt[:, m] = c
    return idx, out, cnt


def radius_lists(
    idx: ArrayLike, sim: ArrayLike, count: ArrayLike, all_sims: ArrayLike, scores: ArrayLike
) -> list[list[tuple[NDArray[np.int64], NDArray[np.float64]]]]:
    """The neighbour lists the router aggregates once some row is partial (reference of the core's
    common radius): with the per-model lists ``idx, sim, count`` (B, M, k) and every row's similarity
    ``all_sims`` (B, n), the radius R is the smallest k-th similarity over the models with k observing
    rows; each such model takes every row observing it with similarity >= R (best first: higher
    similarity, then lower index), the others keep their lists. Returns ``[b][m] = (rows, sims)``."""
    ids, sm, cnt = np.asarray(idx), np.asarray(sim, dtype=np.float64), np.asarray(count)
    A = np.asarray(all_sims, dtype=np.float64)
    obs = ~np.isnan(np.asarray(scores, dtype=np.float64))
    B, M, k = ids.shape
    out = []
    for b in range(B):
        full_k = [m for m in range(M) if cnt[b, m] == k]
        R = min(sm[b, m, k - 1] for m in full_k) if full_k else None
        order = np.lexsort((np.arange(A.shape[1]), -A[b]))  # similarity desc, then index asc
        row = []
        for m in range(M):
            if R is None or cnt[b, m] < k:
                c = int(cnt[b, m])
                row.append((ids[b, m, :c], sm[b, m, :c]))
            else:
                sel = order[(A[b, order] >= R) & obs[order, m]]
                row.append((sel, A[b, sel]))
        out.append(row)
    return out


def predict_per_model(
    lists: list[list[tuple[Any, Any]]],
    scores: ArrayLike,
    costs: ArrayLike,
    weighting: str = "uniform",
    temperature: float = 0.05,
    shrinkage: float = 0.0,
    times: ArrayLike | None = None,
    half_life: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Aggregation over per-model neighbour lists ``[b][m] = (rows, sims)`` (reference of
    ``Router.predict_stats`` once some row is partial, or with a half-life; the lists: :func:`radius_lists`).
    Per query and model: weights as :func:`aggregate` (softmax's max over that model's own list), times
    ``2 ** (-(now - t) / half_life)`` with ``now = max(times)`` when ``half_life > 0``; s_hat and c_hat as
    :func:`aggregate` (priors: column means); count = ``(sum w)^2 / sum w^2`` over the observed scores (0
    for none); spread = their weighted standard deviation."""
    S, C = np.asarray(scores, dtype=np.float64), np.asarray(costs, dtype=np.float64)
    ps, pc = column_means(S), column_means(C)
    decay = np.ones(len(S))
    if half_life > 0:
        t = np.zeros(len(S)) if times is None else np.asarray(times, dtype=np.float64)
        decay = 2.0 ** (-(max(t.max(), 0.0) - t) / half_life)
    B, M = len(lists), len(lists[0])
    out = [np.zeros((B, M)) for _ in range(4)]
    for b in range(B):
        for m in range(M):
            rows, s = np.asarray(lists[b][m][0], dtype=np.int64), np.asarray(lists[b][m][1], dtype=np.float64)
            c = len(rows)
            if weighting == "uniform":
                w = np.ones(c)
            elif weighting == "similarity":
                w = np.maximum(s, 0.0)
            else:
                w = np.exp((s - (s.max() if c else 0.0)) / temperature)
            w = w * decay[rows]
            for j, (table, prior) in enumerate(((S, ps), (C, pc))):
                v = table[rows, m]
                o = ~np.isnan(v)
                den = w[o].sum() + shrinkage
                out[j][b, m] = (np.sum(w[o] * v[o]) + shrinkage * prior[m]) / den if den > 0 else prior[m]
            v = S[rows, m]
            o = ~np.isnan(v)
            sw, sw2 = w[o].sum(), (w[o] ** 2).sum()
            out[2][b, m] = sw * sw / sw2 if sw2 > 0 else 0.0
            if sw > 0:
                mu = np.sum(w[o] * v[o]) / sw
                out[3][b, m] = np.sqrt(np.sum(w[o] * (v[o] - mu) ** 2) / sw)
    return out[0], out[1], out[2], out[3]


def normalize(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def cosine(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    """float64 cosine similarities (B, N)."""
    return normalize(Q) @ normalize(X).T


def confidence(
    sim: ArrayLike,
    neighbour_scores: ArrayLike,
    neighbour_costs: ArrayLike,
    routed: ArrayLike,
    lam: float,
    prior_costs: ArrayLike | None = None,
) -> dict[str, NDArray[Any]]:
    """Per-query confidence signals (paper §8): the NumPy reference of ``KNNRouter.confidence``.

    Parameters
    ----------
    sim : (B, k) float
        Cosine similarities of each query's neighbours, nearest first.
    neighbour_scores, neighbour_costs : (B, k, M) float, NaN = missing
        The neighbours' true outcomes (scores on [0, 1], USD).
    routed : (B,) int
        The model the router picked for each query at ``lam``.
    lam : float
        Trade-off in score per USD.
    prior_costs : (M,) float, optional
        Stands in for a missing neighbour cost (the support set's column means); 0 if not given.

    Returns
    -------
    dict of (B,) arrays
        ``kth_similarity`` (float64): cosine of the k-th neighbour (low: the query is far from the
        support set); ``agreement`` (float64): share of the k neighbours whose own best observed model at
        ``lam`` (argmax of ``s - lam c`` over models with a score; ties to the cheaper, then the lower
        index) is the routed one.
    """
    sm = np.asarray(sim, dtype=np.float64)
    ns = np.asarray(neighbour_scores, dtype=np.float32).astype(np.float64)
    nc = np.asarray(neighbour_costs, dtype=np.float32).astype(np.float64)
    if ns.ndim != 3 or ns.shape[:2] != sm.shape or nc.shape != ns.shape:
        raise ValueError(
            f"neighbour_scores/costs must be (B, k, M) matching sim {sm.shape}; got {ns.shape}, {nc.shape}"
        )
    m = ns.shape[2]
    pc = np.zeros(m) if prior_costs is None else np.asarray(prior_costs, dtype=np.float32).astype(np.float64)
    c = np.where(np.isnan(nc), pc[None, None, :], nc)
    u = np.where(np.isnan(ns), -np.inf, ns - float(lam) * c)
    best_u = u.max(axis=2, keepdims=True)
    cand = np.isfinite(u) & (u == best_u)
    c_c = np.where(cand, c, np.inf)
    cand &= c_c == c_c.min(axis=2, keepdims=True)
    best = np.where(cand.any(axis=2), np.argmax(cand, axis=2), -1)  # first: lowest index
    agree = (best == np.asarray(routed, dtype=np.int64)[:, None]).mean(axis=1)
    return {"kth_similarity": sm[:, -1].copy(), "agreement": agree.astype(np.float64)}


# pure-Python hull / AUC (a different algorithm from the core's monotone chain)


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
    pts = [(0.0, 0.0)] + [(float(c) / c_max, float(s)) for c, s in zip(costs, scores, strict=False)]
    xs = sorted({p[0] for p in pts})
    # g(x) = max_{x' <= x} f(x'), with f the concave majorant on [0, max x]; flat after max x.
    grid = sorted({x for x in xs if x <= 1.0} | ({1.0} if xs[-1] > 1.0 else set()))
    def g(x: float) -> float:
        cand = [_concave_majorant(pts, xx) for xx in xs if xx <= x] + [_concave_majorant(pts, x)]
        return max(cand)
    area = 0.0
    for a, b in zip(grid, grid[1:], strict=False):
        area += 0.5 * (g(a) + g(b)) * (b - a)
    last = grid[-1]
    if last < 1.0:
        area += g(last) * (1.0 - last)
    return area
