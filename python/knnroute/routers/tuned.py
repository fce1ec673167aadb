"""The "tuned kNN" router: k, weighting and shrinkage chosen by validation AUC, never on test.

Where the data knows the input part of each cost before any model is called (prompt tokens x input
price, ``RoutingDataset.input_costs``), the search also tries the cost model ``input+knn``: the
neighbours predict only the rest of the cost (``cost - input cost``: the output tokens), and the prompt's
own input cost is added back. Validation decides between it and plain ``knn`` like any other setting.

The tuning AUC is computed over the validation prompts plus the training prompts routed leave-one-out
(:func:`tune_knn`). The grid includes a shrinkage of 1e6, which makes every prediction the training
column means: the "best single model" fallback the tuner picks when validation says kNN does not help.

The search retrieves the ``k_max`` nearest training prompts of every validation prompt once and slices the
first ``k`` columns for each smaller ``k`` (neighbour lists are nested: the top-k is a prefix of the
top-k_max under the search's tie rule), so the whole grid costs one search plus one core aggregation and
one sweep per configuration. Each configuration is scored with the predictions the fitted
:class:`~knnroute.routers.knn.KNNRouter` of that configuration makes (same core aggregation, same priors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import knnroute_core
from knnroute.routers import curves as _curves
from knnroute.routers.base import NotFittedError, ParamsMixin, lam_array
from knnroute.routers.knn import KNNRouter
from knnroute.routers.neighbours import loo_search, search

__all__ = [
    "COST_MODELS",
    "KS",
    "MIN_VAL_PROMPTS",
    "SHRINKAGES",
    "WEIGHTINGS",
    "KNNConfig",
    "TunedKNNRouter",
    "TuningResult",
    "aggregate",
    "grid_aucs",
    "grid_predictions",
    "knn_grid",
    "loo_neighbours",
    "make_knn_router",
    "tune_representations",
    "residual_costs",
    "tune_knn",
]

KS: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
#: with fewer validation prompts than this, ``knnroute fit`` and ``knnroute eval`` warn that tuning is noisy
MIN_VAL_PROMPTS = 30
# (weighting, temperature); the temperature only matters for softmax.
WEIGHTINGS: tuple[tuple[str, float], ...] = (
    ("uniform", 0.05),
    ("similarity", 0.05),
    ("softmax", 0.01),
    ("softmax", 0.05),
    ("softmax", 0.1),
)
# 1e6 is the "best-single" fallback: the neighbours' weight (at most k) is negligible next to the prior, so
# every prompt gets the training column means and the sweep routes like the best single models on train.
SHRINKAGES: tuple[float, ...] = (0.0, 1.0, 5.0, 20.0, 100.0, 1e6)
# "knn": the neighbours' costs; "input+knn": the prompt's known input cost + the neighbours' remaining cost.
COST_MODELS: tuple[str, ...] = ("knn", "input+knn")


def residual_costs(costs: ArrayLike, input_cost: ArrayLike) -> NDArray[np.float64]:
    """``max(cost - input_cost, 0)`` per cell (what the neighbours predict under ``input+knn``); NaN kept."""
    c = np.asarray(costs, dtype=np.float64)
    k = np.asarray(input_cost, dtype=np.float64)
    if k.shape != c.shape:
        raise ValueError(f"input_cost has shape {k.shape}, costs {c.shape}")
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise ValueError("input_cost must be finite and >= 0")
    return np.where(np.isnan(c), np.nan, np.maximum(c - k, 0.0))


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


def aggregate(
    idx: NDArray[np.int64],
    sim: NDArray[np.float32],
    scores: NDArray[np.float32],
    costs: NDArray[np.float32],
    config: KNNConfig,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Predictions of ``config`` from the first ``config.k`` neighbours (``knnroute_core.aggregate``)."""
    k = config.k
    sh, ch = knnroute_core.aggregate(
        np.ascontiguousarray(idx[:, :k]),
        np.ascontiguousarray(sim[:, :k]),
        np.ascontiguousarray(scores, dtype=np.float32),
        np.ascontiguousarray(costs, dtype=np.float32),
        weighting=config.weighting,
        temperature=float(config.temperature),
        shrinkage=float(config.shrinkage),
    )
    return np.asarray(sh), np.asarray(ch)


def grid_predictions(
    idx: NDArray[np.int64],
    sim: NDArray[np.float32],
    scores: ArrayLike,
    costs: ArrayLike,
    configs: Sequence[KNNConfig],
) -> Iterator[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """:func:`aggregate` of every configuration of ``configs`` from one neighbour list, in order.

    ``idx``/``sim`` hold the ``k_max`` nearest support rows of each query; every configuration uses its
    first ``k`` columns.
    """
    s = np.ascontiguousarray(scores, dtype=np.float32)
    c = np.ascontiguousarray(costs, dtype=np.float32)
    ks = sorted({int(cfg.k) for cfg in configs})
    if ks and not 1 <= ks[0] <= ks[-1] <= idx.shape[1]:
        raise ValueError(f"configs ask for k in [{ks[0]}, {ks[-1]}] but {idx.shape[1]} neighbours were given")
    sliced = {k: (np.ascontiguousarray(idx[:, :k]), np.ascontiguousarray(sim[:, :k])) for k in ks}
    for cfg in configs:
        yield aggregate(*sliced[cfg.k], s, c, cfg)


def grid_aucs(
    idx: NDArray[np.int64],
    sim: NDArray[np.float32],
    scores: ArrayLike,
    cost_models: Sequence[tuple[ArrayLike, ArrayLike | float]],
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    c_max: float,
    configs: Sequence[KNNConfig],
) -> NDArray[np.float64]:
    """Tuning AUC of every configuration under every cost model, ``(len(cost_models), len(configs))``.

    ``cost_models``: ``(cost table (N, M), add)`` pairs; ``add`` is 0 or a (B, M) known cost added to the
    predicted cost. One core call (``knnroute_core.tune_grid``) for the whole grid: the neighbour sums of each
    weighting are accumulated once and read off at every ``k`` and shrinkage. Each entry is exactly
    ``curve_from_predictions(*aggregate(idx, sim, scores, table, cfg) + add, true_scores, true_costs, c_max).auc``
    (``tests/test_tuned.py`` checks that against this loop).
    """
    ks = [int(c.k) for c in configs]
    if ks and not 1 <= min(ks) <= max(ks) <= idx.shape[1]:
        raise ValueError(f"configs ask for k in [{min(ks)}, {max(ks)}] but {idx.shape[1]} neighbours were given")
    tables, adds = [], []
    for table, add in cost_models:
        tables.append(np.ascontiguousarray(table, dtype=np.float32))
        a = np.asarray(add, dtype=np.float64)
        shape = (idx.shape[0], tables[-1].shape[1])
        adds.append(None if a.ndim == 0 and float(a) == 0.0 else np.ascontiguousarray(np.broadcast_to(a, shape)))
    return np.asarray(knnroute_core.tune_grid(
        np.ascontiguousarray(idx, dtype=np.int64), np.ascontiguousarray(sim, dtype=np.float32),
        np.ascontiguousarray(scores, dtype=np.float32), tables, adds,
        np.ascontiguousarray(true_scores, dtype=np.float64), np.ascontiguousarray(true_costs, dtype=np.float64),
        float(c_max), ks, [c.weighting for c in configs], [float(c.temperature) for c in configs],
        [float(c.shrinkage) for c in configs],
    ), dtype=np.float64)


@dataclass(frozen=True)
class TuningResult:
    """The chosen configuration, its validation AUC and the whole grid's validation AUCs."""

    best: KNNConfig
    val_auc: float
    table: list[dict[str, Any]]
    cost_model: str = "knn"


def loo_neighbours(X: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Leave-one-out top-``k`` of every row of ``X`` among the other rows (needs ``k < len(X)``).

    Searches ``k + 1`` and drops each row's own entry (:func:`knnroute.routers.neighbours.drop_self`), so
    column order (nearest first) is kept.
    """
    return loo_search(X, k)


def tune_knn(
    X_train: ArrayLike,
    scores_train: ArrayLike,
    costs_train: ArrayLike,
    X_val: ArrayLike,
    scores_val: ArrayLike,
    costs_val: ArrayLike,
    grid: Sequence[KNNConfig] | None = None,
    loo: bool = True,
    input_cost_train: ArrayLike | None = None,
    input_cost_val: ArrayLike | None = None,
) -> TuningResult:
    """Choose the kNN configuration with the highest AUC on the tuning prompts.

    The tuning prompts are the validation prompts and, with ``loo`` (default), every training prompt
    routed leave-one-out (its neighbours among the other training prompts, never itself): one AUC over
    the pooled predictions. The validation sets are small (37 prompts on MBPP, 16 on MT-Bench), and a
    choice among ~180 configurations on them alone is noisy; the leave-one-out predictions add the whole
    training set without touching the test set. The pooled truth is filled and normalised by the same
    conventions as the test set (its own ``c_max``). Ties go to the earlier configuration of the grid
    (uniform, no shrinkage, small k first; cost model ``knn`` before ``input+knn``).

    With ``input_cost_train`` and ``input_cost_val`` (known input cost per prompt and model, USD), every
    configuration is also scored under the ``input+knn`` cost model (see the module docstring).
    """
    if (input_cost_train is None) != (input_cost_val is None):
        raise ValueError("give both input_cost_train and input_cost_val, or neither")
    s_tr = np.ascontiguousarray(scores_train, dtype=np.float32)
    c_tr = np.ascontiguousarray(costs_train, dtype=np.float32)
    n_train = s_tr.shape[0]
    configs = list(grid) if grid is not None else knn_grid(n_train - 1 if loo else n_train)
    if not configs:
        raise ValueError("empty tuning grid")
    k_max = max(cfg.k for cfg in configs)
    if k_max > n_train:
        raise ValueError(f"grid asks for k={k_max} but there are only {n_train} training prompts")
    idx, sim = search(X_train, X_val, k_max)
    s_pool, c_pool = np.asarray(scores_val, dtype=np.float64), np.asarray(costs_val, dtype=np.float64)
    known = None if input_cost_val is None else [np.asarray(input_cost_val, dtype=np.float64)]
    if loo and k_max < n_train:
        li, ls = loo_neighbours(X_train, k_max)
        idx, sim = np.concatenate([idx, li]), np.concatenate([sim, ls])
        s_pool = np.concatenate([s_pool, np.asarray(scores_train, dtype=np.float64)])
        c_pool = np.concatenate([c_pool, np.asarray(costs_train, dtype=np.float64)])
        if known is not None:
            known.append(np.asarray(input_cost_train, dtype=np.float64))
    ts, tc = _curves.fill_missing(s_pool, c_pool)
    c_max = _curves.cost_scale(tc)
    # cost model -> (cost table the neighbours average, cost added per pooled prompt)
    cost_models: list[tuple[str, Any, Any]] = [("knn", c_tr, 0.0)]
    if known is not None:
        k_pool = np.concatenate(known)
        if k_pool.shape != c_pool.shape:
            raise ValueError(
                f"input costs have shape {k_pool.shape}, the tuning prompts' costs {c_pool.shape}"
            )
        r_tr = residual_costs(c_tr, input_cost_train).astype(np.float32)  # type: ignore[arg-type]
        cost_models.append(("input+knn", r_tr, k_pool))
    aucs = grid_aucs(idx, sim, s_tr, [(c_table, add) for _, c_table, add in cost_models], ts, tc, c_max, configs)
    table = []
    best_i, best_auc, best_cm = 0, -np.inf, "knn"
    for (cm, _, _), row_aucs in zip(cost_models, aucs, strict=True):
        for i, (cfg, auc_i) in enumerate(zip(configs, row_aucs.tolist(), strict=True)):
            auc = float(auc_i)
            row = {**cfg.kwargs(), "val_auc": auc}
            if known is not None:
                row["cost_model"] = cm
            table.append(row)
            if auc > best_auc:
                best_i, best_auc, best_cm = i, auc, cm
    return TuningResult(best=configs[best_i], val_auc=float(best_auc), table=table, cost_model=best_cm)


def make_knn_router(config: KNNConfig) -> KNNRouter:
    """``KNNRouter(**config.kwargs())``."""
    return KNNRouter(**config.kwargs())


def tune_representations(
    reps: Sequence[ArrayLike], train: ArrayLike, val: ArrayLike, scores: ArrayLike, costs: ArrayLike,
    model_names: Sequence[str] | None = None, grid: Sequence[KNNConfig] | None = None, random_state: int = 0,
    **fit_kw: Any,
) -> tuple[int, TunedKNNRouter, list[float]]:
    """Tune a :class:`TunedKNNRouter` on each representation of the same prompts (rows ``train`` as support,
    ``val`` for validation) and keep the one with the highest tuning AUC (ties: the earlier representation).

    Returns ``(index of the chosen representation, its fitted router, every representation's tuning AUC)``.
    ``fit_kw`` goes to every ``fit`` (e.g. known input costs). Used for the lexical hybrid's weight ``w``
    (``knn-tuned-lex`` and ``knnroute fit``).
    """
    tr, va = np.asarray(train), np.asarray(val)
    S, C = np.asarray(scores), np.asarray(costs)
    best: tuple[int, TunedKNNRouter] | None = None
    aucs: list[float] = []
    for i, X in enumerate(reps):
        Xa = np.asarray(X)
        m = TunedKNNRouter(grid=grid, random_state=random_state).fit(
            Xa[tr], S[tr], C[tr], model_names=model_names, X_val=Xa[va], scores_val=S[va], costs_val=C[va],
            **fit_kw,
        )
        aucs.append(float(m.val_auc_))
        if best is None or m.val_auc_ > best[1].val_auc_:  # strict: ties keep the earlier representation
            best = (i, m)
    if best is None:
        raise ValueError("no representation to tune on")
    return best[0], best[1], aucs


class TunedKNNRouter(ParamsMixin):
    """The ``knn-tuned`` router: a kNN router whose k, weighting and shrinkage are chosen on validation.

    Parameters
    ----------
    grid : sequence of KNNConfig, optional
        Candidates (default :func:`knn_grid` of the training size).
    random_state : int, default 0
        Seeds the validation carve when ``fit`` gets no validation set.
    loo : bool, default True
        Also score every candidate on the training prompts routed leave-one-out (see :func:`tune_knn`).

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

    def __init__(
        self, grid: Sequence[KNNConfig] | None = None, random_state: int = 0, loo: bool = True
    ) -> None:
        self.grid = grid
        self.random_state = random_state
        self.loo = loo

    def fit(
        self,
        X: ArrayLike,
        scores: ArrayLike,
        costs: ArrayLike,
        model_names: Sequence[str] | None = None,
        X_val: ArrayLike | None = None,
        scores_val: ArrayLike | None = None,
        costs_val: ArrayLike | None = None,
        input_cost: ArrayLike | None = None,
        input_cost_val: ArrayLike | None = None,
    ) -> TunedKNNRouter:
        """Tune on ``(X_val, scores_val, costs_val)`` with ``X`` as the support, then fit on ``X``.

        Without validation arrays, a seeded 1/8 of the training prompts is held out for the search (the
        final router still uses all of them).

        ``input_cost`` (n, M) and, with validation arrays, ``input_cost_val``: the known input part of each
        cost (prompt tokens x input price, USD). With them the search also tries the ``input+knn`` cost
        model; if validation picks it, ``predict`` and ``route`` need the queries' ``input_cost`` too.
        """
        X_ = np.asarray(X, dtype=np.float32)
        S_ = np.asarray(scores, dtype=np.float64)
        C_ = np.asarray(costs, dtype=np.float64)
        K_ = None if input_cost is None else np.asarray(input_cost, dtype=np.float64)
        if K_ is not None and K_.shape != C_.shape:
            raise ValueError(f"input_cost has shape {K_.shape}, costs {C_.shape}")
        if X_val is None or scores_val is None or costs_val is None:
            n = X_.shape[0]
            perm = np.random.default_rng(self.random_state).permutation(n)
            n_val = max(1, round(n / 8))
            if n - n_val < 1:
                raise ValueError(f"{n} training prompts are too few to hold out a validation set")
            va, tr = perm[:n_val], perm[n_val:]
            res = tune_knn(
                X_[tr], S_[tr], C_[tr], X_[va], S_[va], C_[va], self._grid(tr.size), loo=self.loo,
                input_cost_train=None if K_ is None else K_[tr],
                input_cost_val=None if K_ is None else K_[va],
            )
        else:
            if (K_ is None) != (input_cost_val is None):
                raise ValueError("with validation data, give both input_cost and input_cost_val, or neither")
            res = tune_knn(X_, S_, C_, X_val, scores_val, costs_val, self._grid(X_.shape[0]), loo=self.loo,
                           input_cost_train=K_, input_cost_val=input_cost_val)
        self.best_ = res.best
        self.val_auc_ = res.val_auc
        self.tuning_table_ = res.table
        self.cost_model_ = res.cost_model
        support_costs = C_ if res.cost_model == "knn" else residual_costs(C_, K_)  # type: ignore[arg-type]
        self.router_ = make_knn_router(res.best).fit(X_, S_, support_costs, model_names=model_names)
        self.model_names_ = getattr(self.router_, "model_names_", model_names)
        return self

    def _grid(self, n_support: int) -> list[KNNConfig]:
        n_max = max(1, n_support - 1) if self.loo else n_support  # leave-one-out sees n - 1 neighbours
        if self.grid is None:
            return knn_grid(n_max)
        return [KNNConfig(min(c.k, n_max), c.weighting, c.temperature, c.shrinkage) for c in self.grid]

    def _fitted(self) -> Any:
        r = getattr(self, "router_", None)
        if r is None:
            raise NotFittedError(
                "TunedKNNRouter is not fitted yet: call fit(X, scores, costs, X_val=...) first"
            )
        return r

    def _known(self, n: int, input_cost: ArrayLike | None) -> NDArray[np.float64] | None:
        if getattr(self, "cost_model_", "knn") == "knn":
            return None
        if input_cost is None:
            raise ValueError(
                "this router predicts cost as the prompt's input cost + the neighbours' output cost "
                "(validation chose cost model 'input+knn'): pass input_cost=(n, M) USD, prompt tokens x "
                "input price"
            )
        k = np.asarray(input_cost, dtype=np.float64)
        m = len(self.model_names_) if self.model_names_ is not None else k.shape[-1]
        if k.shape != (n, m) or not np.all(np.isfinite(k)) or np.any(k < 0):
            raise ValueError(f"input_cost must be finite, >= 0 and of shape ({n}, {m}), got {k.shape}")
        return k

    def predict(
        self, X: ArrayLike, input_cost: ArrayLike | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Predicted score and cost per model of the chosen configuration: (n, M) float32 each.

        ``input_cost`` (n, M): the queries' known input cost, needed when ``cost_model_ == "input+knn"``
        (ignored otherwise).
        """
        s_hat, c_hat = self._fitted().predict(X)
        known = self._known(np.shape(s_hat)[0], input_cost)
        if known is None:
            return s_hat, c_hat
        return s_hat, (np.asarray(c_hat, dtype=np.float64) + known).astype(np.float32)

    def route(
        self, X: ArrayLike, lam: float | ArrayLike, input_cost: ArrayLike | None = None
    ) -> NDArray[np.int64]:
        """Routed model per query (see ``KNNRouter.route``); ``input_cost`` as in :meth:`predict`."""
        if getattr(self, "cost_model_", "knn") == "knn":
            return self._fitted().route(X, lam)
        s_hat, c_hat = self.predict(X, input_cost)
        lams, scalar = lam_array(lam)
        out = np.asarray(knnroute_core.route(np.ascontiguousarray(s_hat), np.ascontiguousarray(c_hat), lams))
        return out[:, 0] if scalar else out

    def __repr__(self) -> str:
        best = getattr(self, "best_", None)
        if best is None:
            return "TunedKNNRouter(unfitted)"
        cm = getattr(self, "cost_model_", "knn")
        return f"TunedKNNRouter({best.label()}{'' if cm == 'knn' else ', cost=' + cm})"
