"""NumPy prototypes of estimators for routers with bandit (partial) rows (issue 29, third pass).

``bench/online_learning.py --estimator NAME`` replays with :class:`NpRouter` instead of the core. Every
estimator predicts a model's mean score (and cost) around a query from a matrix of observations in which a
feedback row observes one model (others NaN):

* ``lists``: each model's k nearest rows that observed it (the core with ``common_radius=False``);
* ``radius``: the core's default: one radius R = the smallest k-th similarity over the models with k
  observing rows, each such model averages all its observing rows within R;
* ``additive``: the k nearest rows of all (partial or not: the full-information router's resolution);
  local difficulty ``d`` = mean over the observed cells there of ``s_ij - g_j`` (``g`` = each model's mean
  on the fitted rows); model m = ``(sum of its observed cells + n0 (g_m + d)) / (n_m + n0)``;
* ``impute``: as ``additive``, and every feedback row also carries, for each model it did not observe, the
  conditional mean ``g_m + beta_jm (s - g_j)`` given the observed model j's outcome (``beta`` = the
  regression slope of m on j over the fitted rows), counted with weight ``w`` (``--impute-weight``);
* ``resid``: as ``additive`` with a different prior: model m's own k nearest observing rows' mean moved to
  N's difficulty, ``own mean + D(N) - D(own list)`` (``D`` = the mean over a region's rows of each row's mean
  residual ``s_ij - g_j``), so every model is compared at N's difficulty level;
* ``resid-impute``: ``resid`` + ``impute``'s cells; ``resid-limpute``: ``resid`` + cells imputed around the
  router's own prediction at the row, ``mu_m(x) + beta_jm (s - mu_j(x))``, ``beta`` from the fitted rows'
  residuals around the start router's prediction, clipped to the fitted range.

With full information the ``resid`` estimators equal the plain kNN mean (own list = N, nothing imputed).

Costs go through the same estimator as scores (cost difficulty: prompt length). ``count`` (for exploration)
is the evidence in rows (``n_m + w n_imp``, without the n0 pseudo-rows), ``spread`` the standard deviation of
the observed cells (0.5 with fewer than two).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ESTIMATORS = ("lists", "radius", "additive", "impute", "resid", "resid-impute", "resid-limpute")


def _slopes(V: np.ndarray) -> np.ndarray:
    """beta[j, m]: the least-squares slope of column m on column j over rows observing both (0 if flat)."""
    M = V.shape[1]
    B = np.zeros((M, M))
    for j in range(M):
        for m in range(M):
            ok = ~np.isnan(V[:, j]) & ~np.isnan(V[:, m])
            if j == m or ok.sum() < 3:
                continue
            a, b = V[ok, j], V[ok, m]
            va = float(np.var(a))
            B[j, m] = float(np.cov(a, b, bias=True)[0, 1]) / va if va > 0 else 0.0
    return B


class NpRouter:
    """A growing support set of (embedding, scores, costs) rows, NaN = unobserved, and one estimator."""

    def __init__(self, X: np.ndarray, S: np.ndarray, C: np.ndarray, k: int, estimator: str,
                 n0: float = 3.0, w_imp: float = 0.5, capacity: int | None = None) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}")
        n, M = S.shape
        cap = max(capacity or n, n)
        self.k, self.est, self.n0, self.w = int(k), estimator, float(n0), float(w_imp)
        self.beta = 1.0
        self.X = np.zeros((cap, X.shape[1]), np.float32)
        self.S = np.full((cap, M), np.nan)
        self.C = np.full((cap, M), np.nan)
        self.IS = np.full((cap, M), np.nan)  # imputed cells (feedback rows only)
        self.IC = np.full((cap, M), np.nan)
        self.X[:n], self.S[:n], self.C[:n] = X, S, C
        self.n = n
        self.gs, self.gc = np.nanmean(S, axis=0), np.nanmean(C, axis=0)
        self.bs, self.bc = _slopes(S), _slopes(C)
        self.lo_s, self.hi_s = np.nanmin(S, axis=0), np.nanmax(S, axis=0)
        self.lo_c, self.hi_c = np.nanmin(C, axis=0), np.nanmax(C, axis=0)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if estimator == "resid-limpute":  # slopes of the residuals around the start router's local means
            ps, pc = self.predict(X)
            self.bs, self.bc = _slopes(S - ps), _slopes(C - pc)

    def add(self, Xb: np.ndarray, Sb: np.ndarray, Cb: np.ndarray, times: Any = None) -> None:
        """Rows as the core's ``add`` takes them (times ignored: no decay in these prototypes)."""
        for x, s, c in zip(Xb, np.asarray(Sb, np.float64), np.asarray(Cb, np.float64), strict=True):
            self._add_row(x, s, c)

    def _add_row(self, x: np.ndarray, s: np.ndarray, c: np.ndarray) -> None:
        i = self.n
        if i == len(self.X):  # grow
            for name in ("X", "S", "C", "IS", "IC"):
                a = getattr(self, name)
                b = np.full((2 * len(a), a.shape[1]), np.nan, a.dtype) if name != "X" else np.zeros(
                    (2 * len(a), a.shape[1]), a.dtype)
                b[:i] = a
                setattr(self, name, b)
        self.X[i], self.S[i], self.C[i] = x, s, c
        obs = np.flatnonzero(~np.isnan(s))
        if self.est.endswith("impute") and len(obs) == 1:
            j = int(obs[0])
            gs, gc = self.gs, self.gc
            if self.est == "resid-limpute":  # around the router's own prediction at x (before this row)
                if self._last is not None and np.array_equal(self._last[0], x):
                    gs, gc = self._last[1], self._last[2]
                else:
                    ps, pc, _, _ = self.predict_stats(x[None, :])
                    gs, gc = ps[0], pc[0]
            for V, imp_rows, g, B, lo, hi in ((s, self.IS, gs, self.bs, self.lo_s, self.hi_s),
                                       (c, self.IC, gc, self.bc, self.lo_c, self.hi_c)):
                imp = np.clip(g + B[j] * (V[j] - g[j]), lo, hi)
                imp[j] = np.nan
                imp_rows[i] = imp
        self.n += 1

    # -- estimators -------------------------------------------------------------------------------------
    def _topk(self, sims: np.ndarray, k: int) -> np.ndarray:
        k = min(k, sims.shape[1])
        if k == sims.shape[1]:
            return np.broadcast_to(np.arange(k), sims.shape).copy()
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]

    def _per_model(self, sims: np.ndarray, V: np.ndarray, radius: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
        q, M = sims.shape[0], V.shape[1]
        obs = ~np.isnan(V)
        kth = np.full((q, M), np.inf)
        full = obs.sum(axis=0) >= self.k
        for m in range(M):
            if full[m]:
                sm = np.where(obs[None, :, m], sims, -np.inf)
                kth[:, m] = -np.partition(-sm, self.k - 1, axis=1)[:, self.k - 1]
        if radius and full.any():
            cut = np.where(full[None, :], kth[:, full].min(axis=1, keepdims=True), -np.inf)
        else:
            cut = np.where(full[None, :], kth, -np.inf)
        sel = obs[None, :, :] & (sims[:, :, None] >= cut[:, None, :])  # (q, n, M)
        Vz = np.nan_to_num(V)
        cnt = sel.sum(axis=1).astype(np.float64)
        sm = np.einsum("qnm,nm->qm", sel, Vz)
        sq = np.einsum("qnm,nm->qm", sel, Vz * Vz)
        mean = sm / np.maximum(cnt, 1)
        spread = np.sqrt(np.maximum(sq / np.maximum(cnt, 1) - mean * mean, 0))
        self._sel = sel
        return mean, cnt, spread

    def _additive(self, idx: np.ndarray, V: np.ndarray, imputed: np.ndarray, g: np.ndarray,
                  prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W = V[idx]  # (q, k, M)
        obs = ~np.isnan(W)
        Wz = np.where(obs, W, 0.0)
        n_m = obs.sum(axis=1).astype(np.float64)
        s_m = Wz.sum(axis=1)
        tot = n_m.sum(axis=1)
        d = (s_m - n_m * g[None, :]).sum(axis=1) / np.maximum(tot, 1)
        base = g[None, :] + d[:, None] if prior is None else prior
        num, den = s_m + self.n0 * base, n_m + self.n0
        if self.est.endswith("impute"):
            Ii = imputed[idx]
            io = ~np.isnan(Ii)
            num = num + self.w * np.where(io, Ii, 0.0).sum(axis=1)
            den = den + self.w * io.sum(axis=1)
        mean = num / den
        evidence = den - self.n0  # rows seen (own cells + weighted imputed), for exploration's count
        sq = (Wz * Wz).sum(axis=1)
        m_obs = s_m / np.maximum(n_m, 1)
        spread = np.where(n_m > 1, np.sqrt(np.maximum(sq / np.maximum(n_m, 1) - m_obs * m_obs, 0)), 0.5)
        return mean, evidence, spread

    def predict_stats(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s_hat, c_hat, count, spread), each (q, M)."""
        Q = np.atleast_2d(np.asarray(Q, np.float32))
        n = self.n
        sims = (Q @ self.X[:n].T).astype(np.float64)
        S, C = self.S[:n], self.C[:n]
        if self.est in ("lists", "radius"):
            s, cnt, sp = self._per_model(sims, S, self.est == "radius")
            c, _, _ = self._per_model(sims, C, self.est == "radius")
            return s, c, cnt, sp
        idx = self._topk(sims, self.k)
        ps = pc = None
        if self.est.startswith("resid"):  # prior: each model's own list, moved to N's difficulty
            ps, pc = self._resid_prior(sims, idx, S, self.gs), self._resid_prior(sims, idx, C, self.gc)
        s, cnt, sp = self._additive(idx, S, self.IS[:n], self.gs, ps)
        c, _, _ = self._additive(idx, C, self.IC[:n], self.gc, pc)
        return s, c, cnt, sp

    def _resid_prior(self, sims: np.ndarray, idx: np.ndarray, V: np.ndarray, g: np.ndarray) -> np.ndarray:
        """model m's own-list mean + D(N) - D(N_m); D(region) = mean over its rows of the row's mean
        residual (observed cells minus the models' fitted means): each row one vote."""
        own, _, _ = self._per_model(sims, V, False)
        sel = self._sel  # (q, n, M): the rows of each model's own list
        ok = ~np.isnan(V)
        r = np.where(ok, V - g[None, :], 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)  # (n,)
        has = ok.any(axis=1)
        dN = (r[idx] * has[idx]).sum(axis=1) / np.maximum(has[idx].sum(axis=1), 1)  # (q,)
        selr = sel & has[None, :, None]
        dM = np.einsum("qnm,n->qm", selr, r) / np.maximum(selr.sum(axis=1), 1)
        return own + self.beta * (dN[:, None] - dM)

    def route_one_detail(self, x: np.ndarray, lam: float) -> dict[str, np.ndarray]:
        s, c, cnt, sp = self.predict_stats(x[None, :])
        self._last = (np.asarray(x).copy(), s[0], c[0])
        return {"s_hat": s[0], "c_hat": c[0], "count": cnt[0], "spread": sp[0]}

    def predict(self, Q: np.ndarray, threads: int = 0, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        outs = [self.predict_stats(Q[i:i + chunk])[:2] for i in range(0, len(Q), chunk)]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def np_router(X: np.ndarray, S: np.ndarray, C: np.ndarray, k: int, P: dict[str, Any],
              capacity: int | None = None) -> NpRouter:
    return NpRouter(X, S, C, k, P["estimator"], P.get("n0", 3.0), P.get("impute_weight", 0.5), capacity)
