"""The paper's "MLP" router: per-model MLP regression of score and cost (scikit-learn, imported lazily).

Per candidate model, an ``MLPRegressor`` maps the prompt embedding to that model's score and cost; a prompt
is routed to ``argmax_m s_hat(m) - lam * c_hat(m)`` (the Router protocol of :mod:`knnroute.routers.base`).
Both targets are z-scored per model (:mod:`knnroute.routers.training`) so that the two outputs weigh the
same. NaN in ``scores`` / ``costs`` is missing: those rows are dropped for that model's regressor.
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
    seed_from,
    validate_fit,
)
from knnroute.routers.training import column_stats, internal_split, one_blas_thread

__all__ = ["MLPRouter"]

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
        tr, va = internal_split(X.shape[0], params["validation_fraction"], seed)
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


class MLPRouter(UtilityRouterMixin, ParamsMixin):
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
        X, S, C, names, val = validate_fit(
            X, scores, costs, model_names, X_val, scores_val, costs_val, dtype=np.float32
        )
        M = S.shape[1]
        s_mean, s_std = column_stats(S)
        s_mean = np.where(np.isfinite(S).any(axis=0), s_mean, 0.0)  # never-scored model: missing counts as 0
        c_mean, c_std = column_stats(C)
        Z = np.stack([(S - s_mean) / s_std, (C - c_mean) / c_std], axis=2)  # (n, M, 2)
        Xv = Zv = None
        if val is not None:
            Xv, Sv, Cv = val
            Zv = np.stack([(Sv - s_mean) / s_std, (Cv - c_mean) / c_std], axis=2)
        groups: list[tuple[int, ...]] = [(0, 1)] if self.joint_targets else [(0,), (1,)]
        seeds = np.random.SeedSequence(seed_from(self.random_state)).generate_state(M * len(groups))
        params = self.get_params()
        estimators: list[list[tuple[tuple[int, ...], Any]]] = []
        with one_blas_thread():  # small products: see LinearRouter.fit
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
                        assert Xv is not None  # set together with Zv
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
        check_is_fitted(self)
        X = as_features(X, "X", self.n_features_in_, dtype=np.float32)
        M = len(self.estimators_)
        z = np.zeros((X.shape[0], M, 2))  # z = 0 is the training mean (constant fallback)
        for m, fitted in enumerate(self.estimators_):
            for cols, est in fitted:
                if est is not None:
                    z[:, m, list(cols)] = np.asarray(est.predict(X), dtype=np.float64).reshape(X.shape[0], -1)
        s_hat = z[:, :, 0] * self.score_std_ + self.score_mean_
        c_hat = np.maximum(z[:, :, 1] * self.cost_std_ + self.cost_mean_, 0.0)
        return s_hat, c_hat
