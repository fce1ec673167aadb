"""Selection (classification) routers for the paper's appendix-D protocol.

In the selection formulation (paper §3, App. D; docs/paper.md) a router maps a prompt straight to a model, trained
on the label ``y = argmax_m s(x, m) - lam * c(x, m)`` of each training prompt *at one λ*: every λ needs its
own classifier. Three forms, as in the paper:

* :class:`KNNVoteSelector` - each of the k nearest training prompts votes for the model that maximises
  its own true utility; the most votes wins.
* :class:`LogisticSelector` - multinomial logistic regression (scikit-learn).
* :class:`MLPSelector` - MLP classifier (scikit-learn), ``hidden_layer_sizes=(100, 100)``.

Design: ``fit(X, scores, costs, ...)`` stores the training data (the Router-protocol signature, plus an
optional ``lams`` to train ahead); ``route(X, lam)`` trains the classifier for a λ the first time it is
asked for and caches it in ``classifiers_`` (keyed by ``float(lam)``). So one object serves every λ like
the utility routers do, and the appendix-D protocol's three λ cost at most three trainings. A classifier
depends on λ only through the training labels and (for the choice of C / the early-stopping epoch) the
validation labels at that λ, judged by validation *accuracy* at predicting the best model; λ values with
the same label pair share one classifier, so results do not depend on the order of requests. A
cost-quality curve over a dense λ grid still needs one training per distinct label vector: on the
RouterBench subset's training splits the evaluator's 1000-point grid gives 48 (ARC-C), 98 (MBPP) and 17
(Winogrande) distinct training-label vectors. The cache makes ``route`` mutate the object: do not share one
selector between threads.

Units of λ
----------
``lam`` means exactly what it means in every ``route()``: USD^-1 with scores on [0, 1], utility
``s - lam * c``. The paper states its three settings as ``λ = {1.0, 0.5, 0.1} / c_max`` (``c_max`` the
largest mean cost of a single model) and reports utilities ×100. :func:`appendix_d_lambdas` converts:
with ``score_scale=1`` (default) ``lam = a / c_max``, i.e. always using the most expensive model costs
``a`` score units out of the score range of 1 (so a = 1.0 is genuinely "low-cost" and a = 0.1 "high
performance"); a reported utility is then ``100 * mean(s - lam c)``. If the paper instead applied
``a / c_max`` to scores already ×100, the same setting is ``score_scale=100`` (``lam = a / (100 c_max)``),
under which even a = 1.0 penalises the most expensive model by only 1 point in 100; the paper's names
for the settings suggest the first reading, but the text does not settle it.

Labels and ties
---------------
A training prompt's label is the argmax over its *observed* models (non-NaN score) of ``s - lam * c``; a
missing cost is filled with that model's mean training cost. Ties go to the cheaper model (true cost),
then the lower index. A prompt with no observed model has no label and is left out (of training, of the
vote and of the validation accuracy). :func:`mean_utility` scores picks with the evaluation conventions
(missing score counts as 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from knnroute.routers.base import (
    ParamsMixin,
    as_features,
    check_is_fitted,
    route_predictions,
    seed_from,
    validate_fit,
)
from knnroute.routers.neighbours import neighbours
from knnroute.routers.training import column_stats, internal_split, one_blas_thread

__all__ = [
    "KNNVoteSelector",
    "LogisticSelector",
    "MLPSelector",
    "appendix_d_lambdas",
    "best_model_labels",
    "mean_utility",
]


def appendix_d_lambdas(
    costs: Any, fractions: Sequence[float] = (1.0, 0.5, 0.1), score_scale: float = 1.0
) -> np.ndarray:
    """The appendix-D λ settings in ``route()`` units (USD^-1, scores on [0, 1]).

    Parameters
    ----------
    costs : array-like (n, M)
        Costs in USD per query (NaN = missing); ``c_max`` is the largest per-model mean cost.
    fractions : sequence of float, default (1.0, 0.5, 0.1)
        The paper's low-cost, balanced and high-performance settings, ``λ = a / c_max``.
    score_scale : float, default 1.0
        The score scale the paper's λ is read on (see the module docstring): 1 gives ``a / c_max``,
        100 gives ``a / (100 c_max)``.

    Returns
    -------
    ndarray (len(fractions),) float64
    """
    C = np.asarray(costs, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"costs must be 2-D (n_prompts, n_models), got shape {C.shape}")
    means = np.array([np.nanmean(col) if np.isfinite(col).any() else np.nan for col in C.T])
    if not np.isfinite(means).any() or np.nanmax(means) <= 0:
        raise ValueError("costs has no positive observed cell: c_max is undefined")
    c_max = float(np.nanmax(means))
    return np.asarray(fractions, dtype=np.float64) / (float(score_scale) * c_max)


def _fill_costs(C: np.ndarray, cost_fill: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(C), C, cost_fill[None, :])


def best_model_labels(scores: Any, costs: Any, lam: float, cost_fill: Any = None) -> np.ndarray:
    """Per prompt, the model with the highest true utility ``s - lam * c``.

    Parameters
    ----------
    scores, costs : array-like (n, M)
        NaN = missing. Only models with an observed score compete.
    lam : float
        Cost weight (USD^-1, scores on [0, 1]).
    cost_fill : array-like (M,), optional
        Cost used where a cost is missing (default: the column's mean observed cost).

    Returns
    -------
    ndarray (n,) int64
        Model index; ties to the cheaper model, then the lower index; -1 where no model is observed.
    """
    S = np.asarray(scores, dtype=np.float64)
    C = np.asarray(costs, dtype=np.float64)
    fill = column_stats(C)[0] if cost_fill is None else np.asarray(cost_fill, dtype=np.float64)
    Cf = _fill_costs(C, fill)
    observed = np.isfinite(S)
    u = np.where(observed, S - lam * Cf, -np.inf)
    tied = observed & (u == u.max(axis=1, keepdims=True))
    labels = np.argmin(np.where(tied, Cf, np.inf), axis=1).astype(np.int64)
    labels[~observed.any(axis=1)] = -1
    return labels


def mean_utility(choice: Any, scores: Any, costs: Any, lam: float, cost_fill: Any = None) -> float:
    """Mean true utility ``s - lam * c`` of routing prompt i to ``choice[i]`` (missing score = 0).

    Parameters
    ----------
    choice : array-like (n,) int
    scores, costs : array-like (n, M)
    lam : float
    cost_fill : array-like (M,), optional
        Cost where missing (default: the column's mean observed cost).

    Returns
    -------
    float (on the [0, 1] score scale; ×100 for the paper's tables)
    """
    S = np.asarray(scores, dtype=np.float64)
    C = np.asarray(costs, dtype=np.float64)
    fill = column_stats(C)[0] if cost_fill is None else np.asarray(cost_fill, dtype=np.float64)
    rows = np.arange(S.shape[0])
    ch = np.asarray(choice, dtype=np.int64)
    s = np.nan_to_num(S[rows, ch], nan=0.0)
    c = _fill_costs(C, fill)[rows, ch]
    return float(np.mean(s - lam * c)) if S.shape[0] else float("nan")


class _Constant:
    """A classifier that always answers one model (only one label occurred in training)."""

    def __init__(self, label: int) -> None:
        self.label = int(label)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[0], self.label, dtype=np.int64)

    def __repr__(self) -> str:
        return f"_Constant(label={self.label})"


def _cap_rows(sel: Any) -> None:
    """Keep a seeded ``max_train_rows`` subsample of the training (and of the validation) prompts.

    A selector trains one classifier per distinct label vector along the lambda grid (about a hundred
    on the larger datasets), so its fit time is that many trainings: the cap bounds it. The datasets with
    at most ``max_train_rows`` training prompts are unaffected.
    """
    cap = getattr(sel, "max_train_rows", None)
    if cap is None:
        return
    rng = np.random.default_rng(sel._seed)
    n = sel.X_.shape[0]
    if n > cap:
        rows = np.sort(rng.choice(n, int(cap), replace=False))
        sel.X_, sel.scores_, sel.costs_ = sel.X_[rows], sel.scores_[rows], sel.costs_[rows]
    if sel.val_ is not None and sel.val_[0].shape[0] > cap:
        rows = np.sort(rng.choice(sel.val_[0].shape[0], int(cap), replace=False))
        sel.val_ = tuple(a[rows] for a in sel.val_)


class _SelectorBase(ParamsMixin):
    """Stores the training data in ``fit``; ``route`` trains/caches one classifier per λ."""

    selection = True

    def fit(
        self,
        X: Any,
        scores: Any,
        costs: Any,
        model_names: Sequence[str] | None = None,
        X_val: Any = None,
        scores_val: Any = None,
        costs_val: Any = None,
        lams: Any = None,
    ) -> _SelectorBase:
        """Store the training (and validation) data; optionally train the classifiers for ``lams`` now.

        Parameters
        ----------
        X : array-like (n, d)
        scores, costs : array-like (n, M)
            Scores on [0, 1], costs in USD per query; NaN = missing.
        model_names : sequence of str of length M, optional
        X_val, scores_val, costs_val : array-like, optional
            Validation split (hyperparameter choice / early stopping, where the selector uses one).
        lams : float or array-like (L,), optional
            λ values to train classifiers for immediately (otherwise on first ``route``).

        Returns
        -------
        self
        """
        X, S, C, names, val = validate_fit(X, scores, costs, model_names, X_val, scores_val, costs_val)
        self.X_, self.scores_, self.costs_ = X, S, C
        self.val_ = val
        self.cost_mean_ = column_stats(C)[0]
        self.model_names_ = names
        self.n_features_in_ = X.shape[1]
        self.classifiers_: dict[float, Any] = {}
        self._by_labels: dict[bytes, Any] = {}
        self._prepare()
        if lams is not None:
            for lam in np.atleast_1d(np.asarray(lams, dtype=np.float64)):
                self._classifier(float(lam))
        return self

    def _prepare(self) -> None:
        """Hook run at the end of ``fit``."""

    def _labels(self, lam: float) -> np.ndarray:
        return best_model_labels(self.scores_, self.costs_, lam, self.cost_mean_)

    def _classifier(self, lam: float) -> Any:
        key = float(lam)
        if key not in self.classifiers_:
            labels = self._labels(key)
            val_labels = None
            if self.val_ is not None:
                val_labels = best_model_labels(self.val_[1], self.val_[2], key, self.cost_mean_)
            # Labels change with lam only where some prompt's best model changes, so many lams share one
            # (training, validation) label pair, and a classifier depends on lam only through it: those
            # lams share one classifier, trained once. Exact, and independent of the order of requests.
            lkey = labels.tobytes() + b"|" + (b"" if val_labels is None else val_labels.tobytes())
            if lkey not in self._by_labels:
                self._by_labels[lkey] = self._train(labels, val_labels)
            self.classifiers_[key] = self._by_labels[lkey]
        return self.classifiers_[key]

    def _train(self, y: np.ndarray, y_val: np.ndarray | None) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _route_many(self, X: np.ndarray, lams: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], lams.size), dtype=np.int64)
        for j, lam in enumerate(lams):
            out[:, j] = self._classifier(float(lam)).predict(X)
        return out

    def route(self, X: Any, lam: Any) -> np.ndarray:
        """Route each prompt to the model its λ-specific classifier picks.

        Parameters
        ----------
        X : array-like (n, d)
        lam : float or array-like (L,)
            Cost weight(s), USD^-1 with scores on [0, 1] (see the module docstring for the paper's units).

        Returns
        -------
        ndarray of int64, shape (n,) for a scalar ``lam``, (n, L) for a 1-D ``lam``
        """
        check_is_fitted(self)
        X = as_features(X, "X", self.n_features_in_)
        lam_arr = np.asarray(lam, dtype=np.float64)
        if lam_arr.ndim > 1:
            raise ValueError(f"lam must be a scalar or 1-D, got shape {lam_arr.shape}")
        lams = np.atleast_1d(lam_arr)
        if not np.all(np.isfinite(lams)) or np.any(lams < 0):
            raise ValueError("lam must be finite and >= 0")
        out = self._route_many(X, lams)
        return out[:, 0] if lam_arr.ndim == 0 else out

    @staticmethod
    def _accuracy(clf: Any, Xv: np.ndarray, yv: np.ndarray) -> float:
        """Share of validation prompts (with a label) whose best model the classifier picks."""
        has = yv >= 0
        return float(np.mean(clf.predict(Xv[has]) == yv[has])) if has.any() else 0.0


class KNNVoteSelector(_SelectorBase):
    """kNN majority vote at a given λ (the paper's selection-form kNN).

    The k nearest training prompts by cosine similarity each vote for their own best model at λ
    (:func:`best_model_labels`); the model with the most votes wins. Ties between vote counts go to the
    model with the lower mean training cost, then the lower index; a prompt whose neighbours have no
    labels at all goes to the cheapest model.

    Parameters
    ----------
    k : int, default 100
        Neighbours (capped at the number of training prompts).
    random_state : int, Generator or None, default None
        Unused (the vote is deterministic); accepted for a uniform interface.

    Attributes
    ----------
    classifiers_ : dict float -> ndarray (n_train,) int64
        Training labels per λ (cached).
    cost_mean_ : ndarray (M,)
    model_names_ : list of str
    n_features_in_ : int
    """

    def __init__(self, k: int = 100, random_state: int | np.random.Generator | None = None) -> None:
        self.k = k
        self.random_state = random_state

    def _prepare(self) -> None:
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def _train(self, y: np.ndarray, y_val: np.ndarray | None) -> np.ndarray:
        return y

    def _route_many(self, X: np.ndarray, lams: np.ndarray) -> np.ndarray:
        M = len(self.model_names_)
        k = int(min(self.k, self.X_.shape[0]))
        out = np.empty((X.shape[0], lams.size), dtype=np.int64)
        if X.shape[0] == 0:
            return out
        idx, _ = neighbours(self.X_, X, k, exclude_self=False)  # once for all λ
        price = np.broadcast_to(self.cost_mean_, (X.shape[0], M))
        for j, lam in enumerate(lams):
            votes = self._classifier(float(lam))[idx]  # (n, k), -1 = no label
            counts = (votes[:, :, None] == np.arange(M)[None, None, :]).sum(axis=1).astype(np.float64)
            out[:, j] = route_predictions(counts, price, 0.0)  # most votes; ties to the cheaper model
        return out


class LogisticSelector(_SelectorBase):
    """Multinomial logistic regression on the λ-specific best-model labels (scikit-learn).

    ``softmax(W x + b)`` over the models that occur as labels; a model that is never the best training
    choice at this λ is never predicted. If one label occurs only, the selector answers it always.

    Parameters
    ----------
    C : float, default 1.0
        Inverse L2 strength, used when ``fit`` got no validation data.
    Cs : sequence of float, default (0.1, 1.0, 10.0, 100.0)
        With validation data, the value whose classifier picks the validation prompts' best model (at
        this λ) most often is used instead of ``C`` (ties: the first).
    max_iter : int, default 300
        L-BFGS iteration cap (a cap on fit time; not reaching convergence is not an error here).
    max_train_rows : int or None, default 1000
        Train on a seeded subsample of at most this many prompts (and validate on at most as many); see
        ``_cap_rows``. None: all.
    random_state : int, Generator or None, default None

    Attributes
    ----------
    classifiers_ : dict float -> fitted ``LogisticRegression`` (or a constant)
        Its ``selected_C_`` is the C used.
    cost_mean_ : ndarray (M,)
    model_names_ : list of str
    n_features_in_ : int
    """

    def __init__(
        self,
        C: float = 1.0,
        Cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
        max_iter: int = 300,
        max_train_rows: int | None = 1000,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.max_train_rows = max_train_rows
        self.random_state = random_state

    def _prepare(self) -> None:
        self._seed = seed_from(self.random_state)
        _cap_rows(self)

    def _train(self, y: np.ndarray, y_val: np.ndarray | None) -> Any:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        keep = y >= 0
        classes = np.unique(y[keep])
        if classes.size == 0:
            return _Constant(int(np.argmin(self.cost_mean_)))
        if classes.size == 1:
            return _Constant(int(classes[0]))
        candidates = list(self.Cs) if y_val is not None else [self.C]
        best, best_acc = None, -np.inf
        for c in candidates:
            clf = LogisticRegression(C=float(c), max_iter=int(self.max_iter), random_state=self._seed)
            with warnings.catch_warnings(), one_blas_thread():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(self.X_[keep], y[keep])
            acc = 0.0
            if y_val is not None:
                assert self.val_ is not None  # y_val comes from the validation split
                acc = self._accuracy(clf, self.val_[0], y_val)
            if best is None or acc > best_acc:
                best, best_acc = clf, acc
        assert best is not None  # candidates is never empty
        best.selected_C_ = best.C
        return best


class MLPSelector(_SelectorBase):
    """MLP classifier on the λ-specific best-model labels (scikit-learn ``MLPClassifier``, ReLU, Adam).

    Trained epoch by epoch (``partial_fit``) with early stopping on validation accuracy (share of
    validation prompts whose best model at this λ is picked), keeping the best weights; patience
    ``n_iter_no_change`` epochs. The validation set is the one given to ``fit``, else a seeded
    ``validation_fraction`` hold-out of the training prompts (not stratified: rare labels make sklearn's
    stratified split fail). If one label occurs only, the selector answers it always.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100, 100)
    alpha : float, default 1e-4
    batch_size : int, default 200
    learning_rate_init : float, default 1e-3
    max_iter : int, default 100
        Epoch cap.
    n_iter_no_change : int, default 8
        Patience in epochs.
    validation_fraction : float, default 0.1
    max_train_rows : int or None, default 1000
        Train on a seeded subsample of at most this many prompts (and validate on at most as many). None: all.
    random_state : int, Generator or None, default None

    Attributes
    ----------
    classifiers_ : dict float -> fitted ``MLPClassifier`` (or a constant)
    cost_mean_ : ndarray (M,)
    model_names_ : list of str
    n_features_in_ : int
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100, 100),
        alpha: float = 1e-4,
        batch_size: int = 200,
        learning_rate_init: float = 1e-3,
        max_iter: int = 100,
        n_iter_no_change: int = 8,
        validation_fraction: float = 0.1,
        max_train_rows: int | None = 1000,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_train_rows = max_train_rows
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _prepare(self) -> None:
        self._seed = seed_from(self.random_state)
        _cap_rows(self)

    def _train(self, y: np.ndarray, y_val: np.ndarray | None) -> Any:
        from sklearn.neural_network import MLPClassifier

        keep = np.flatnonzero(y >= 0)
        classes = np.unique(y[keep])
        if classes.size == 0:
            return _Constant(int(np.argmin(self.cost_mean_)))
        if classes.size == 1:
            return _Constant(int(classes[0]))
        val: tuple[Any, Any] | None
        if y_val is not None:
            assert self.val_ is not None  # y_val comes from the validation split
            tr, val = keep, (self.val_[0], y_val)
        else:
            part_tr, part_va = internal_split(keep.size, self.validation_fraction, self._seed)
            tr = keep[part_tr]
            va = keep[part_va]
            val = (self.X_[va], y[va]) if va.size else None
        clf = MLPClassifier(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            activation="relu",
            solver="adam",
            alpha=self.alpha,
            batch_size=min(int(self.batch_size), tr.size),
            learning_rate_init=self.learning_rate_init,
            shuffle=True,
            random_state=self._seed,
        )
        best_acc, best_state, bad = -np.inf, None, 0
        with one_blas_thread():
            for _ in range(int(self.max_iter)):
                clf.partial_fit(self.X_[tr], y[tr], classes=classes)
                if val is None:
                    continue
                acc = self._accuracy(clf, *val)
                if best_state is None or acc > best_acc:
                    best_acc, bad = acc, 0
                    best_state = ([w.copy() for w in clf.coefs_], [b.copy() for b in clf.intercepts_])
                else:
                    bad += 1
                    if bad >= self.n_iter_no_change:
                        break
        if best_state is not None:
            clf.coefs_, clf.intercepts_ = best_state
        return clf
