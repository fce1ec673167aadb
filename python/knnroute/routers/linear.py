"""The paper's "Linear" router: per-model ridge regression of score and cost (closed form, on NumPy/SciPy).

Per candidate model, one regressor predicts the score and one the cost from the prompt embedding; a prompt
is routed to ``argmax_m s_hat(m) - lam * c_hat(m)`` (the Router protocol of :mod:`knnroute.routers.base`).
Costs are fitted as per-model z-scores (:mod:`knnroute.routers.training`), scores as given. NaN in
``scores`` / ``costs`` is missing: each per-model regression drops the rows where its target is NaN (score
and cost are fitted separately, so a missing score does not discard the cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from knnroute.routers.base import (
    ParamsMixin,
    UtilityRouterMixin,
    as_features,
    check_is_fitted,
    validate_fit,
)
from knnroute.routers.training import column_stats, one_blas_thread, score_means

__all__ = ["LinearRouter"]

_DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


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


class LinearRouter(UtilityRouterMixin, ParamsMixin):
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
        X, S, C, names, val = validate_fit(X, scores, costs, model_names, X_val, scores_val, costs_val)
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError("alphas must be a non-empty sequence of positive floats")
        d = X.shape[1]
        M = S.shape[1]
        cost_mean, cost_std = column_stats(C)
        Cz = (C - cost_mean) / cost_std
        # Column j < M is model j's score, column M + j its z-scored cost. Columns whose observed rows
        # coincide (all of them when nothing is missing) share one centred Gram matrix.
        Y = np.concatenate([S, Cz], axis=1)
        obs = np.isfinite(Y)
        fallback = np.concatenate([score_means(S), np.zeros(M)])  # z = 0 is the mean cost
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
        with one_blas_thread():
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
        check_is_fitted(self)
        X = as_features(X, "X", self.n_features_in_)
        s_hat = X @ self.coef_score_.T + self.intercept_score_
        c_hat = np.maximum(X @ self.coef_cost_.T + self.intercept_cost_, 0.0)
        return s_hat, c_hat
