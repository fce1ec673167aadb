"""The "tuned kNN" router: k, weighting and shrinkage chosen by validation AUC, never on test.

The search retrieves the ``k_max`` nearest training prompts of every validation prompt once and slices the
first ``k`` columns for each smaller ``k`` (neighbour lists are nested: the top-k is a prefix of the
top-k_max under the search's tie rule), so the whole grid costs one search plus one aggregation and one
sweep per configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.evaluate import curves as _curves
from knnroute.evaluate import reference as _ref

__all__ = [
    "KS",
    "SHRINKAGES",
    "WEIGHTINGS",
    "KNNConfig",
    "NumpyKNNRouter",
    "TunedKNNRouter",
    "TuningResult",
    "aggregate",
    "knn_grid",
    "make_knn_router",
    "neighbours",
    "tune_knn",
]

KS: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
# (weighting, temperature); the temperature only matters for softmax.
WEIGHTINGS: tuple[tuple[str, float], ...] = (
    ("uniform", 0.05),
    ("similarity", 0.05),
    ("softmax", 0.01),
    ("softmax", 0.05),
    ("softmax", 0.1),
)
SHRINKAGES: tuple[float, ...] = (0.0, 1.0, 5.0, 20.0)


@dataclass(frozen=True)
class KNNConfig:
    """One kNN configuration (the keyword arguments of ``KNNRouter``)."""

    k: int
    weighting: str = "uniform"
    temperature: float = 0.05
    shrinkage: float = 0.0

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        w = self.weighting if self.weighting != "softmax" else f"softmax(T={self.temperature:g})"
        return f"k={self.k}, {w}, shrinkage={self.shrinkage:g}"


def knn_grid(
    n_train: int,
    ks: Sequence[int] = KS,
    weightings: Sequence[tuple[str, float]] = WEIGHTINGS,
    shrinkages: Sequence[float] = SHRINKAGES,
) -> list[KNNConfig]:
    """The search grid, ``k`` capped at ``n_train`` (duplicates after capping removed), simplest first."""
    if n_train < 1:
        raise ValueError("n_train must be >= 1")
    k_list = sorted({min(int(k), n_train) for k in ks})
    return [
        KNNConfig(k=k, weighting=w, temperature=t, shrinkage=float(b))
        for w, t in weightings
        for b in shrinkages
        for k in k_list
    ]


def neighbours(
    X_support: ArrayLike, X_query: ArrayLike, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact cosine top-``k`` of the queries among the support rows (core when available)."""
    core = _curves._core()
    xs = np.ascontiguousarray(X_support, dtype=np.float32)
    xq = np.ascontiguousarray(X_query, dtype=np.float32)
    if core is not None:
        idx, sim = core.SupportSet(xs).search(xq, int(k))
        return np.asarray(idx, dtype=np.int64), np.asarray(sim, dtype=np.float32)
    idx, sim = _ref.topk_cosine(xq, xs, int(k))
    return idx, sim.astype(np.float32)


def aggregate(
    idx: NDArray[np.int64],
    sim: NDArray[np.float32],
    scores: NDArray[np.float32],
    costs: NDArray[np.float32],
    config: KNNConfig,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Predictions of ``config`` from the first ``config.k`` neighbours (core when available)."""
    k = config.k
    i = np.ascontiguousarray(idx[:, :k])
    s = np.ascontiguousarray(sim[:, :k])
    core = _curves._core()
    if core is not None:
        sh, ch = core.aggregate(
            i,
            s,
            scores,
            costs,
            weighting=config.weighting,
            temperature=float(config.temperature),
            shrinkage=float(config.shrinkage),
        )
        return np.asarray(sh), np.asarray(ch)
    sh, ch = _ref.aggregate(i, s, scores, costs, config.weighting, config.temperature, config.shrinkage)
    return sh.astype(np.float32), ch.astype(np.float32)


@dataclass(frozen=True)
class TuningResult:
    """The chosen configuration, its validation AUC and the whole grid's validation AUCs."""

    best: KNNConfig
    val_auc: float
    table: list[dict[str, Any]]


def tune_knn(
    X_train: ArrayLike,
    scores_train: ArrayLike,
    costs_train: ArrayLike,
    X_val: ArrayLike,
    scores_val: ArrayLike,
    costs_val: ArrayLike,
    grid: Sequence[KNNConfig] | None = None,
) -> TuningResult:
    """Choose the kNN configuration with the highest AUC on the validation prompts.

    The validation truth is filled and normalised by the same conventions as the test set (its own
    ``c_max``). Ties go to the earlier configuration of the grid (uniform, no shrinkage, small k first).
    """
    s_tr = np.ascontiguousarray(scores_train, dtype=np.float32)
    c_tr = np.ascontiguousarray(costs_train, dtype=np.float32)
    n_train = s_tr.shape[0]
    configs = list(grid) if grid is not None else knn_grid(n_train)
    if not configs:
        raise ValueError("empty tuning grid")
    k_max = max(cfg.k for cfg in configs)
    if k_max > n_train:
        raise ValueError(f"grid asks for k={k_max} but there are only {n_train} training prompts")
    ts, tc = _curves.fill_missing(scores_val, costs_val)
    c_max = _curves.cost_scale(tc)
    idx, sim = neighbours(X_train, X_val, k_max)
    table = []
    best_i, best_auc = 0, -np.inf
    for i, cfg in enumerate(configs):
        sh, ch = aggregate(idx, sim, s_tr, c_tr, cfg)
        auc = _curves.curve_from_predictions(sh, ch, ts, tc, c_max).auc
        table.append({**cfg.kwargs(), "val_auc": auc})
        if auc > best_auc:
            best_i, best_auc = i, auc
    return TuningResult(best=configs[best_i], val_auc=float(best_auc), table=table)


class NumpyKNNRouter:
    """A kNN router on the NumPy references (the Router protocol); the fallback when the core is absent.

    Same definition as ``knnroute.routers.knn.KNNRouter``: exact cosine top-k, aggregation of the
    neighbours' observed scores and costs with optional weighting and shrinkage toward the training
    column means.
    """

    def __init__(
        self, k: int = 100, weighting: str = "uniform", temperature: float = 0.05, shrinkage: float = 0.0
    ) -> None:
        self.k = k
        self.weighting = weighting
        self.temperature = temperature
        self.shrinkage = shrinkage

    def fit(self, X: ArrayLike, scores: ArrayLike, costs: ArrayLike, **_: Any) -> NumpyKNNRouter:
        self.X_ = np.ascontiguousarray(X, dtype=np.float32)
        self.scores_ = np.ascontiguousarray(scores, dtype=np.float32)
        self.costs_ = np.ascontiguousarray(costs, dtype=np.float32)
        return self

    def predict(self, X: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        cfg = KNNConfig(self.k, self.weighting, self.temperature, self.shrinkage)
        idx, sim = _ref.topk_cosine(np.asarray(X, dtype=np.float32), self.X_, self.k)
        sh, ch = _ref.aggregate(
            idx, sim, self.scores_, self.costs_, cfg.weighting, cfg.temperature, cfg.shrinkage
        )
        return sh.astype(np.float32), ch.astype(np.float32)

    def route(self, X: ArrayLike, lam: float | ArrayLike) -> NDArray[np.int64]:
        sh, ch = self.predict(X)
        out = _ref.route(sh, ch, np.atleast_1d(lam))
        return out[:, 0] if np.ndim(lam) == 0 else out


def make_knn_router(config: KNNConfig) -> Any:
    """``KNNRouter(**config)`` on the core, or :class:`NumpyKNNRouter` when the core is unavailable."""
    if _curves._core() is not None:
        from knnroute.routers.knn import KNNRouter

        return KNNRouter(**config.kwargs())
    return NumpyKNNRouter(**config.kwargs())


class TunedKNNRouter:
    """The ``knn-tuned`` router: a kNN router whose k, weighting and shrinkage are chosen on validation.

    Parameters
    ----------
    grid : sequence of KNNConfig, optional
        Candidates (default :func:`knn_grid` of the training size).
    random_state : int, default 0
        Seeds the validation carve when ``fit`` gets no validation set.

    Attributes
    ----------
    best_ : KNNConfig
        The chosen configuration (highest validation AUC; ties to the earlier one).
    val_auc_ : float
    tuning_table_ : list of dict
        Every candidate with its validation AUC.
    router_ : KNNRouter
        The chosen configuration fitted on the training prompts (the support set).
    """

    def __init__(self, grid: Sequence[KNNConfig] | None = None, random_state: int = 0) -> None:
        self.grid = grid
        self.random_state = random_state

    def fit(
        self,
        X: ArrayLike,
        scores: ArrayLike,
        costs: ArrayLike,
        model_names: Sequence[str] | None = None,
        X_val: ArrayLike | None = None,
        scores_val: ArrayLike | None = None,
        costs_val: ArrayLike | None = None,
    ) -> TunedKNNRouter:
        """Tune on ``(X_val, scores_val, costs_val)`` with ``X`` as the support, then fit on ``X``.

        Without validation arrays, a seeded 1/8 of the training prompts is held out for the search (the
        final router still uses all of them).
        """
        X_ = np.asarray(X, dtype=np.float32)
        S_ = np.asarray(scores, dtype=np.float64)
        C_ = np.asarray(costs, dtype=np.float64)
        if X_val is None or scores_val is None or costs_val is None:
            n = X_.shape[0]
            perm = np.random.default_rng(self.random_state).permutation(n)
            n_val = max(1, round(n / 8))
            if n - n_val < 1:
                raise ValueError(f"{n} training prompts are too few to hold out a validation set")
            va, tr = perm[:n_val], perm[n_val:]
            res = tune_knn(X_[tr], S_[tr], C_[tr], X_[va], S_[va], C_[va], self._grid(tr.size))
        else:
            res = tune_knn(X_, S_, C_, X_val, scores_val, costs_val, self._grid(X_.shape[0]))
        self.best_ = res.best
        self.val_auc_ = res.val_auc
        self.tuning_table_ = res.table
        self.router_ = make_knn_router(res.best).fit(X_, S_, C_, model_names=model_names)
        self.model_names_ = getattr(self.router_, "model_names_", model_names)
        return self

    def _grid(self, n_support: int) -> list[KNNConfig]:
        if self.grid is None:
            return knn_grid(n_support)
        return [KNNConfig(min(c.k, n_support), c.weighting, c.temperature, c.shrinkage) for c in self.grid]

    def _fitted(self) -> Any:
        r = getattr(self, "router_", None)
        if r is None:
            raise ValueError("TunedKNNRouter is not fitted yet: call fit(X, scores, costs, X_val=...) first")
        return r

    def predict(self, X: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Predicted score and cost per model of the chosen configuration: (n, M) float32 each."""
        return self._fitted().predict(X)

    def route(self, X: ArrayLike, lam: float | ArrayLike) -> NDArray[np.int64]:
        """Routed model per query (see ``KNNRouter.route``)."""
        return self._fitted().route(X, lam)

    def __repr__(self) -> str:
        best = getattr(self, "best_", None)
        return f"TunedKNNRouter({'unfitted' if best is None else best.label()})"
