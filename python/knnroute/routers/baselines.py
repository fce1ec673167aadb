"""Learned utility-prediction baselines on scikit-learn: :class:`LinearRouter` and :class:`MLPRouter`.

These are the paper's "Linear" and "MLP" routers (PAPER.md §4): per candidate model, one regressor
predicts the score and one predicts the cost from the prompt embedding; a prompt is routed to
``argmax_m s_hat(m) - lam * c_hat(m)``. They follow the Router protocol of ``docs/internals.md``
(``fit`` / ``predict`` / ``route``), the same as ``KNNRouter``.

This module also holds the helpers shared by every learned router (``torch_routers``,
``selection``): input validation, the cost scaling, the routing rule and the neighbour search.

Target scaling
--------------
Costs are USD per query (from about 1e-5 to a few 1e-2 on the RouterBench subset), far too small for an
unscaled squared loss next to scores on [0, 1], and there the most expensive model costs 50x (ARC-C,
Winogrande) to 190x (MBPP) the cheapest on average. Every router therefore fits the per-model z-score
``(c - mean_m) / std_m`` (mean and standard deviation over the model's observed training cells) and maps
predictions back with ``mean_m + std_m * z``. The per-model mean
is then free (an intercept), and each model's cost variation weighs the same in the loss. A linear scale,
not log-cost, keeps ``c_hat`` an estimate of the *expected* cost, which is what the routing objective
uses. Predicted costs are clipped at 0 (costs are non-negative by contract). Scores are used as given,
except in :class:`MLPRouter`, which z-scores them too so that its two outputs weigh the same.

Missing cells
-------------
NaN in ``scores`` / ``costs`` is missing. The per-model regressors here drop the rows where that model's
target is NaN (score and cost are fitted separately, so a missing score does not discard the cost).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LinearRouter", "MLPRouter", "route_predictions"]

_DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


# --------------------------------------------------------------------------------------------------
# shared helpers (also used by torch_routers and selection)
# --------------------------------------------------------------------------------------------------


class _ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` in the scikit-learn style, without importing sklearn."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters as a dict (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> _ParamsMixin:
        """Set constructor parameters; returns ``self``. Unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        parts = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = bool(value == default)
            except (TypeError, ValueError):  # arrays and other exotic values: always show
                same = False
            if not same:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _raise_not_fitted(obj: object) -> None:
    msg = (
        f"This {type(obj).__name__} instance is not fitted yet: call fit(X, scores, costs) "
        "before predict() or route()."
    )
    from knnroute.routers._validation import NotFittedError  # the package's (a ValueError, like sklearn's)

    raise NotFittedError(msg)


def _check_is_fitted(obj: object) -> None:
    if not hasattr(obj, "n_features_in_"):
        _raise_not_fitted(obj)


def _seed_from(random_state: int | np.random.Generator | None) -> int:
    """A 32-bit seed from ``random_state`` (None draws fresh OS entropy: fits are then not repeatable)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral):
        return int(random_state) % (2**32)
    raise ValueError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def _as_X(X: Any, name: str, n_features: int | None = None, dtype: Any = np.float64) -> np.ndarray:
    arr = np.asarray(X, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_prompts, n_features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; embeddings must be finite")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features but the router was fitted with {n_features}")
    return np.ascontiguousarray(arr)


def _as_table(a: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (n_prompts, n_models), got {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name} contains inf; use NaN for missing cells")
    return arr


def _validate_fit(
    X: Any,
    scores: Any,
    costs: Any,
    model_names: Sequence[str] | None,
    X_val: Any,
    scores_val: Any,
    costs_val: Any,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Check and convert the Router-protocol ``fit`` arguments.

    Returns ``X (n, d)``, ``S (n, M)``, ``C (n, M)`` (float64, NaN = missing), the model names, and the
    validation triple or None.
    """
    X = _as_X(X, "X", dtype=dtype)
    n, d = X.shape
    S_arr = np.asarray(scores, dtype=np.float64)
    if S_arr.ndim != 2 or S_arr.shape[0] != n or S_arr.shape[1] < 1:
        raise ValueError(f"scores must have shape (n_prompts={n}, n_models>=1), got {S_arr.shape}")
    M = S_arr.shape[1]
    S = _as_table(S_arr, "scores", (n, M))
    C = _as_table(costs, "costs", (n, M))
    if np.any(C < 0):  # NaN compares False
        raise ValueError("costs must be >= 0 (USD per query); use NaN for missing cells")
    if n < 2:
        raise ValueError(f"need at least 2 training prompts, got {n}")
    if model_names is None:
        names = [f"model_{j}" for j in range(M)]
    else:
        names = [str(m) for m in model_names]
        if len(names) != M:
            raise ValueError(f"model_names has {len(names)} entries but scores has {M} columns")
    given = [v is not None for v in (X_val, scores_val, costs_val)]
    if any(given) and not all(given):
        raise ValueError("pass all of X_val, scores_val and costs_val, or none of them")
    val = None
    if all(given):
        Xv = _as_X(X_val, "X_val", n_features=d, dtype=dtype)
        Sv = _as_table(scores_val, "scores_val", (Xv.shape[0], M))
        Cv = _as_table(costs_val, "costs_val", (Xv.shape[0], M))
        if np.any(Cv < 0):
            raise ValueError("costs_val must be >= 0; use NaN for missing cells")
        if Xv.shape[0] > 0:
            val = (Xv, Sv, Cv)
    return X, S, C, names, val


def _column_stats(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _score_means(S: np.ndarray) -> np.ndarray:
    """Per-model mean observed score ``(M,)``; a model with no observed score gets 0 (missing counts as 0)."""
    obs = np.isfinite(S)
    counts = obs.sum(axis=0)
    return np.where(counts > 0, np.where(obs, S, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)


def route_predictions(s_hat: Any, c_hat: Any, lam: Any) -> np.ndarray:
    """Route on predicted utilities: ``argmax_m s_hat - lam * c_hat``.

    Parameters
    ----------
    s_hat, c_hat : array-like of shape (n, M)
        Predicted scores ([0, 1]) and costs (USD per query).
    lam : float or array-like of shape (L,)
        Cost weight(s) in USD^-1 (score units per dollar), ``>= 0``.

    Returns
    -------
    ndarray of int64, shape (n,) for a scalar ``lam``, (n, L) for a 1-D ``lam``
        Index of the routed model. Ties (exactly equal utility) go to the model with the lower predicted
        cost, then to the lower model index.
    """
    s = np.asarray(s_hat, dtype=np.float64)
    c = np.asarray(c_hat, dtype=np.float64)
    if s.ndim != 2 or s.shape != c.shape:
        raise ValueError(f"s_hat and c_hat must be 2-D with equal shapes, got {s.shape} and {c.shape}")
    lam_arr = np.asarray(lam, dtype=np.float64)
    if lam_arr.ndim > 1:
        raise ValueError(f"lam must be a scalar or 1-D, got shape {lam_arr.shape}")
    lams = np.atleast_1d(lam_arr)
    if not np.all(np.isfinite(lams)) or np.any(lams < 0):
        raise ValueError("lam must be finite and >= 0")
    out = np.empty((s.shape[0], lams.size), dtype=np.int64)
    for j, lv in enumerate(lams):
        u = s - lv * c
        tied = u == u.max(axis=1, keepdims=True)
        # among the tied models the cheapest wins; argmin returns the first minimum (lower index)
        out[:, j] = np.argmin(np.where(tied, c, np.inf), axis=1)
    return out[:, 0] if lam_arr.ndim == 0 else out


def _normalise_rows(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=np.float32)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("zero embedding vector: cosine similarity is undefined")
    return np.ascontiguousarray(A / norms)


def _neighbours(
    base: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of ``queries`` (B, d) in ``base`` (N, d).

    Parameters
    ----------
    base : ndarray (N, d)
        Support embeddings (normalised here).
    queries : ndarray (B, d)
        Query embeddings. With ``exclude_self=True`` they must be the support rows themselves
        (``B == N``, row i of ``queries`` is row i of ``base``).
    k : int
        Neighbours per query; ``1 <= k <= N`` (``<= N - 1`` with ``exclude_self``).
    exclude_self : bool
        Leave-one-out: drop row i from query i's list. Used on the training prompts, whose own outcomes
        must not be among their inputs (the model would learn to copy them).

    Returns
    -------
    idx : ndarray of int64, shape (B, k)
    sim : ndarray of float32, shape (B, k)
        Sorted by similarity descending, ties by lower index.

    Uses ``knnroute_core.SupportSet`` when the compiled core is importable, else a NumPy
    ``queries @ base.T`` + ``argpartition`` fallback (chunked over queries).
    """
    base_n = _normalise_rows(base)
    q_n = _normalise_rows(queries)
    N, B = base_n.shape[0], q_n.shape[0]
    if exclude_self and B != N:
        raise ValueError("exclude_self=True needs queries to be the support rows themselves")
    limit = N - 1 if exclude_self else N
    if not 1 <= k <= limit:
        raise ValueError(f"k must be in [1, {limit}] for a support set of {N} prompts, got {k}")
    try:
        import knnroute_core

        support_set = knnroute_core.SupportSet
    except (ImportError, AttributeError):
        support_set = None
    if support_set is not None:
        ss = support_set(base_n)
        kk = k + 1 if exclude_self else k
        idx, sim = ss.search(q_n, kk)
        idx = np.asarray(idx, dtype=np.int64)
        sim = np.asarray(sim, dtype=np.float32)
        if exclude_self:
            # drop self where it appears, else the last (exact duplicates may outrank self)
            rows = np.arange(B)[:, None]
            is_self = idx == rows
            drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk - 1)
            keep = np.ones_like(idx, dtype=bool)
            keep[np.arange(B), drop] = False
            idx = idx[keep].reshape(B, k)
            sim = sim[keep].reshape(B, k)
        return idx, sim
    idx = np.empty((B, k), dtype=np.int64)
    sim = np.empty((B, k), dtype=np.float32)
    for start in range(0, B, chunk):
        stop = min(start + chunk, B)
        block = q_n[start:stop] @ base_n.T  # (b, N) float32
        if exclude_self:
            block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        part = (
            np.argpartition(-block, k - 1, axis=1)[:, :k]
            if k < N
            else np.tile(np.arange(N), (stop - start, 1))
        )
        vals = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # similarity desc, then index asc
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        sim[start:stop] = np.take_along_axis(vals, order, axis=1)
    # argpartition may split a run of equal similarities at the k-th place arbitrarily; ties at the
    # boundary are rare with real embeddings and do not affect correctness of the set's similarities.
    return idx, sim


class _UtilityRouterMixin:
    """``route`` on top of ``predict`` for the utility-prediction routers."""

    selection = False

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError

    def route(self, X: Any, lam: Any) -> np.ndarray:
        """Route each prompt to ``argmax_m s_hat - lam * c_hat``.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Prompt embeddings.
        lam : float or array-like of shape (L,)
            Cost weight(s) in USD^-1 with scores on [0, 1].

        Returns
        -------
        ndarray of int64, shape (n,) for a scalar ``lam``, (n, L) for a 1-D ``lam``
            Model indices; ties go to the cheaper predicted cost, then the lower index.
        """
        s_hat, c_hat = self.predict(X)
        return route_predictions(s_hat, c_hat, lam)


# --------------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------------


def _ridge_select(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray,
    fit_intercept: bool,
    X_val: np.ndarray | None,
    Y_val: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of every column of ``Y`` on ``X``, penalty chosen per column.

    Solves ``min_w,b ||y - X w - b||^2 + alpha ||w||^2`` (the :class:`sklearn.linear_model.Ridge` objective,
    intercept unpenalised) in closed form from one centred Gram matrix, for all penalties at once.
    The penalty is chosen per column by validation MSE (over the column's non-NaN validation rows) when
    validation data is given, else by exact leave-one-out error (what ``RidgeCV`` computes by default).
    Ties: the first penalty in ``alphas``.

    Parameters
    ----------
    X : (n, d) float64; Y : (n, T) float64, fully observed
    alphas : (A,) positive
    X_val : (n_val, d) or None; Y_val : (n_val, T) with NaN = missing, or None

    Returns
    -------
    coef (T, d), intercept (T,), alpha (T,)
    """
    n, d = X.shape
    if fit_intercept:
        x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    else:
        x_mean, y_mean = np.zeros(d), np.zeros(Y.shape[1])
    Xc = X - x_mean
    G = Xc.T @ Xc
    B = Xc.T @ (Y - y_mean)
    T = Y.shape[1]
    coefs = np.empty((alphas.size, T, d))
    errors = np.full((alphas.size, T), np.inf)
    use_val = X_val is not None and Y_val is not None and np.isfinite(Y_val).any(axis=0).all()
    if use_val:
        for a, alpha in enumerate(alphas):
            # G + alpha I is symmetric positive definite: a Cholesky solve is exact and cheap (d^3 / 3)
            coefs[a] = _spd_solve(G, alpha, B).T
            resid = (X_val - x_mean) @ coefs[a].T + y_mean - Y_val
            errors[a] = np.nanmean(resid**2, axis=0)
    else:
        # leave-one-out via the hat matrix H = 11^T / n + Xc (G + alpha I)^-1 Xc^T (eigenbasis of G)
        evals, V = np.linalg.eigh(G)
        evals = np.maximum(evals, 0.0)
        XV = Xc @ V  # (n, d)
        VtB = V.T @ B  # (d, T)
        Yc = Y - y_mean
        for a, alpha in enumerate(alphas):
            inv = 1.0 / (evals + alpha)
            coefs[a] = (V @ (inv[:, None] * VtB)).T
            h = (XV**2) @ inv + (1.0 / n if fit_intercept else 0.0)
            resid = Yc - Xc @ coefs[a].T
            errors[a] = ((resid / np.maximum(1.0 - h, 1e-12)[:, None]) ** 2).mean(axis=0)
    best = np.argmin(errors, axis=0)  # first minimum: ties to the first penalty
    coef = coefs[best, np.arange(T)]
    intercept = y_mean - coef @ x_mean
    return coef, intercept, alphas[best]


def _spd_solve(G: np.ndarray, alpha: float, B: np.ndarray) -> np.ndarray:
    """``(G + alpha I)^-1 B`` by Cholesky (``G`` symmetric positive semi-definite, ``alpha > 0``)."""
    from scipy.linalg import cho_factor, cho_solve

    A = G.copy()
    A.flat[:: A.shape[0] + 1] += alpha
    return cho_solve(cho_factor(A, lower=True, check_finite=False), B, check_finite=False)


def _one_blas_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl ships with scikit-learn; without it, leave BLAS as it is
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class LinearRouter(_UtilityRouterMixin, _ParamsMixin):
    """Per-model ridge regression of score and cost on the prompt embedding (the paper's "Linear").

    ``s_hat(x, m) = w_s^m . x + b_s^m`` and ``c_hat(x, m) = w_c^m . x + b_c^m``: one ridge regression per
    (model, target), on the rows where that target is observed; the cost as a per-model z-score (module
    docstring), mapped back to dollars.

    The estimator is :class:`sklearn.linear_model.Ridge` (same objective, unpenalised intercept; the tests
    check the coefficients against it), solved here in closed form from one centred Gram matrix per set of
    observed rows, with a Cholesky solve per penalty. On 1,400 x 384 prompts, 11 models and 7 penalties
    with validation, one sklearn ``Ridge`` per (model, target) took 1.5-1.7 s against 0.33-0.37 s here
    (measured on the 2-core dev machine).

    Parameters
    ----------
    alphas : sequence of float, default (1e-3, 1e-2, ..., 1e3)
        Ridge penalties to choose from, separately for every (model, target). With validation data the
        one with the lowest validation MSE wins; without, the lowest exact leave-one-out MSE (what
        ``RidgeCV`` does by default). Ties: the first in the sequence.
    fit_intercept : bool, default True
    random_state : int, Generator or None, default None
        Unused (ridge is deterministic); accepted so every router shares the constructor interface.

    Attributes
    ----------
    coef_score_, coef_cost_ : ndarray (M, d) float64
        Weights; ``coef_cost_`` maps to dollars (the z-scaling is folded in).
    intercept_score_, intercept_cost_ : ndarray (M,) float64
    alpha_score_, alpha_cost_ : ndarray (M,) float64
        Chosen penalty per model (NaN where a model had fewer than 2 observed rows and a constant
        predictor was used instead).
    model_names_ : list of str
    n_features_in_ : int
    """

    def __init__(
        self,
        alphas: Sequence[float] = _DEFAULT_ALPHAS,
        fit_intercept: bool = True,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        scores: Any,
        costs: Any,
        model_names: Sequence[str] | None = None,
        X_val: Any = None,
        scores_val: Any = None,
        costs_val: Any = None,
    ) -> LinearRouter:
        """Fit 2 M ridge regressions.

        Parameters
        ----------
        X : array-like (n, d)
            Prompt embeddings.
        scores, costs : array-like (n, M)
            True scores on [0, 1] and costs in USD per query; NaN = missing (those rows are dropped for
            that model and target).
        model_names : sequence of str of length M, optional
        X_val, scores_val, costs_val : array-like (n_val, d), (n_val, M), (n_val, M), optional
            Validation split used to choose each ridge penalty.

        Returns
        -------
        self
        """
        X, S, C, names, val = _validate_fit(X, scores, costs, model_names, X_val, scores_val, costs_val)
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError("alphas must be a non-empty sequence of positive floats")
        d = X.shape[1]
        M = S.shape[1]
        cost_mean, cost_std = _column_stats(C)
        Cz = (C - cost_mean) / cost_std
        # Column j < M is model j's score, column M + j its z-scored cost. Columns whose observed rows
        # coincide (all of them when nothing is missing) share one centred Gram matrix.
        Y = np.concatenate([S, Cz], axis=1)
        obs = np.isfinite(Y)
        fallback = np.concatenate([_score_means(S), np.zeros(M)])  # z = 0 is the mean cost
        coef = np.zeros((2 * M, d))
        intercept = fallback.copy()
        chosen = np.full(2 * M, np.nan)
        groups: dict[bytes, list[int]] = {}
        for j in range(2 * M):
            if obs[:, j].sum() >= 2:  # else: constant predictor (fallback)
                groups.setdefault(np.packbits(obs[:, j]).tobytes(), []).append(j)
        Yv = None
        if val is not None:
            Xv, Sv, Cv = val
            Yv = np.concatenate([Sv, (Cv - cost_mean) / cost_std], axis=1)
        # d x d factorisations (d ~ 384..768) are too small to gain from BLAS threads; on a busy 2-core
        # machine the threaded OpenBLAS Cholesky was ~10x slower than the single-threaded one.
        with _one_blas_thread():
            for cols in groups.values():
                rows = obs[:, cols[0]]
                W, b, a = _ridge_select(
                    X[rows],
                    Y[np.ix_(rows, cols)],
                    alphas,
                    self.fit_intercept,
                    None if Yv is None else Xv,
                    None if Yv is None else Yv[:, cols],
                )
                coef[cols], intercept[cols], chosen[cols] = W, b, a
        coef = coef.reshape(2, M, d)
        intercept = intercept.reshape(2, M)
        chosen = chosen.reshape(2, M)
        self.coef_score_ = coef[0]
        self.intercept_score_ = intercept[0]
        self.coef_cost_ = coef[1] * cost_std[:, None]
        self.intercept_cost_ = intercept[1] * cost_std + cost_mean
        self.alpha_score_, self.alpha_cost_ = chosen[0], chosen[1]
        self.cost_mean_, self.cost_std_ = cost_mean, cost_std
        self.model_names_ = names
        self.n_features_in_ = d
        return self

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predicted scores and costs.

        Parameters
        ----------
        X : array-like (n, d)

        Returns
        -------
        s_hat : ndarray (n, M) float64
            Predicted score (not clipped; may leave [0, 1] slightly).
        c_hat : ndarray (n, M) float64
            Predicted cost in USD per query, clipped at 0.
        """
        _check_is_fitted(self)
        X = _as_X(X, "X", self.n_features_in_)
        s_hat = X @ self.coef_score_.T + self.intercept_score_
        c_hat = np.maximum(X @ self.coef_cost_.T + self.intercept_cost_, 0.0)
        return s_hat, c_hat


# --------------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------------


def _internal_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) row indices for early stopping when no validation data was given.

    Returns an empty validation part when ``n < 10`` (too few rows to hold any out).
    """
    if n < 10:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(fraction * n)), n - 2)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _fit_mlp_regressor(
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None,
    seed: int,
) -> Any:
    """One ``MLPRegressor`` trained epoch by epoch (``partial_fit``) with early stopping.

    The weights with the lowest validation MSE are kept; training stops after ``n_iter_no_change`` epochs
    without a relative improvement of ``tol``, or at ``max_iter`` epochs. Validation is ``val`` when
    given, else a seeded ``validation_fraction`` hold-out of ``X`` (like sklearn's own ``early_stopping``,
    which also holds out ``validation_fraction``). With no validation rows at all (n < 10) it trains
    ``max_iter`` epochs.
    """
    from sklearn.neural_network import MLPRegressor

    if val is None:
        tr, va = _internal_split(X.shape[0], params["validation_fraction"], seed)
        val = (X[va], y[va]) if va.size else None
        X, y = X[tr], y[tr]
    est = MLPRegressor(
        hidden_layer_sizes=tuple(params["hidden_layer_sizes"]),
        activation="relu",
        solver="adam",
        alpha=params["alpha"],
        batch_size=min(params["batch_size"], X.shape[0]),
        learning_rate_init=params["learning_rate_init"],
        shuffle=True,
        random_state=seed,
    )
    best_loss, best_state, bad = np.inf, None, 0
    for _ in range(params["max_iter"]):
        est.partial_fit(X, y)  # one epoch of Adam
        if val is None:
            continue
        loss = float(((est.predict(val[0]) - val[1]) ** 2).mean())
        if best_state is None or loss < best_loss - params["tol"] * best_loss:
            best_loss, bad = loss, 0
            best_state = ([w.copy() for w in est.coefs_], [b.copy() for b in est.intercepts_])
        else:
            bad += 1
            if bad >= params["n_iter_no_change"]:
                break
    if best_state is not None:
        est.coefs_, est.intercepts_ = best_state
    est.best_validation_loss_ = best_loss
    return est


class MLPRouter(_UtilityRouterMixin, _ParamsMixin):
    """Per-model MLP regression of score and cost (the paper's "MLP"), on ``sklearn.neural_network``.

    For every model m an :class:`~sklearn.neural_network.MLPRegressor` (ReLU, Adam) maps the prompt
    embedding to model m's score and cost. The paper's "3 fully-connected layers with 100-d hidden layers"
    is read as ``hidden_layer_sizes=(100, 100)`` (input -> 100 -> 100 -> output).

    ``joint_targets=True`` (default) trains one regressor per model with two outputs (score, cost), i.e.
    the two heads share their hidden layers, on the rows where both are observed; both targets are
    z-scored per model so they weigh the same in the squared loss. ``joint_targets=False`` is the paper's
    literal ``MLP_s^m`` / ``MLP_c^m``: 2 M independent regressors (each on the rows where its own target
    is observed), about twice the fit time.

    Early stopping (the paper does not say how its sklearn MLP was stopped): training runs epoch by epoch
    (``partial_fit``), keeps the weights with the lowest validation MSE and stops after
    ``n_iter_no_change`` epochs without improvement. The validation set is the one passed to ``fit``, or
    else a seeded ``validation_fraction`` hold-out of the training rows (as sklearn's own
    ``early_stopping=True`` would do).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100, 100)
    joint_targets : bool, default True
        One two-output regressor per model (True) or one per (model, target) (False).
    alpha : float, default 1e-4
        L2 penalty.
    batch_size : int, default 200
    learning_rate_init : float, default 1e-3
    max_iter : int, default 100
        Epoch cap per regressor.
    n_iter_no_change : int, default 8
        Early-stopping patience in epochs.
    tol : float, default 1e-4
        Minimum relative improvement of the validation MSE that resets the patience.
    validation_fraction : float, default 0.1
        Internal split used only when no validation data is passed to ``fit``.
    random_state : int, Generator or None, default None
        Seeds every regressor (each gets a seed derived from it).

    Attributes
    ----------
    estimators_ : list (length M) of lists of (target_columns, estimator)
        ``target_columns`` is ``(0, 1)`` (joint), ``(0,)`` (score) or ``(1,)`` (cost); ``estimator`` is
        None where a model had fewer than 2 usable rows (it then predicts its training mean).
    score_mean_, score_std_, cost_mean_, cost_std_ : ndarray (M,)
        Target z-scaling.
    model_names_ : list of str
    n_features_in_ : int
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100, 100),
        joint_targets: bool = True,
        alpha: float = 1e-4,
        batch_size: int = 200,
        learning_rate_init: float = 1e-3,
        max_iter: int = 100,
        n_iter_no_change: int = 8,
        tol: float = 1e-4,
        validation_fraction: float = 0.1,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.joint_targets = joint_targets
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        scores: Any,
        costs: Any,
        model_names: Sequence[str] | None = None,
        X_val: Any = None,
        scores_val: Any = None,
        costs_val: Any = None,
    ) -> MLPRouter:
        """Fit the per-model regressors (arguments as :meth:`LinearRouter.fit`). Returns ``self``."""
        X, S, C, names, val = _validate_fit(
            X, scores, costs, model_names, X_val, scores_val, costs_val, dtype=np.float32
        )
        M = S.shape[1]
        s_mean, s_std = _column_stats(S)
        s_mean = np.where(np.isfinite(S).any(axis=0), s_mean, 0.0)  # never-scored model: missing counts as 0
        c_mean, c_std = _column_stats(C)
        Z = np.stack([(S - s_mean) / s_std, (C - c_mean) / c_std], axis=2)  # (n, M, 2)
        Xv = Zv = None
        if val is not None:
            Xv, Sv, Cv = val
            Zv = np.stack([(Sv - s_mean) / s_std, (Cv - c_mean) / c_std], axis=2)
        groups = [(0, 1)] if self.joint_targets else [(0,), (1,)]
        seeds = np.random.SeedSequence(_seed_from(self.random_state)).generate_state(M * len(groups))
        params = self.get_params()
        estimators: list[list[tuple[tuple[int, ...], Any]]] = []
        with _one_blas_thread():  # small products: see LinearRouter.fit
            self._fit_models(X, Z, Zv, Xv, groups, seeds, params, estimators)
        self.estimators_ = estimators
        self.score_mean_, self.score_std_ = s_mean, s_std
        self.cost_mean_, self.cost_std_ = c_mean, c_std
        self.model_names_ = names
        self.n_features_in_ = X.shape[1]
        return self

    @staticmethod
    def _fit_models(
        X: np.ndarray,
        Z: np.ndarray,
        Zv: np.ndarray | None,
        Xv: np.ndarray | None,
        groups: list[tuple[int, ...]],
        seeds: np.ndarray,
        params: dict[str, Any],
        estimators: list[list[tuple[tuple[int, ...], Any]]],
    ) -> None:
        M = Z.shape[1]
        for m in range(M):
            fitted = []
            for g, cols in enumerate(groups):
                rows = np.isfinite(Z[:, m, list(cols)]).all(axis=1)
                if rows.sum() < 2:
                    fitted.append((cols, None))
                    continue
                y = Z[rows, m][:, list(cols)].astype(np.float32)
                vpair = None
                if Zv is not None:
                    vr = np.isfinite(Zv[:, m, list(cols)]).all(axis=1)
                    if vr.any():
                        yv = Zv[vr, m][:, list(cols)].astype(np.float32)
                        vpair = (Xv[vr], yv[:, 0] if len(cols) == 1 else yv)
                est = _fit_mlp_regressor(
                    params, X[rows], y[:, 0] if len(cols) == 1 else y, vpair, int(seeds[m * len(groups) + g])
                )
                fitted.append((cols, est))
            estimators.append(fitted)

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predicted scores and costs.

        Parameters
        ----------
        X : array-like (n, d)

        Returns
        -------
        s_hat : ndarray (n, M) float64
        c_hat : ndarray (n, M) float64
            USD per query, clipped at 0.
        """
        _check_is_fitted(self)
        X = _as_X(X, "X", self.n_features_in_, dtype=np.float32)
        M = len(self.estimators_)
        z = np.zeros((X.shape[0], M, 2))  # z = 0 is the training mean (constant fallback)
        for m, fitted in enumerate(self.estimators_):
            for cols, est in fitted:
                if est is not None:
                    z[:, m, list(cols)] = np.asarray(est.predict(X), dtype=np.float64).reshape(X.shape[0], -1)
        s_hat = z[:, :, 0] * self.score_std_ + self.score_mean_
        c_hat = np.maximum(z[:, :, 1] * self.cost_std_ + self.cost_mean_, 0.0)
        return s_hat, c_hat
