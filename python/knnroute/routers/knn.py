"""The kNN router on the compiled core (scikit-learn conventions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import knnroute_core

from knnroute.routers._validation import (
    NotFittedError,
    as_queries,
    check_outcomes,
    lam_array,
    resolve_model_names,
)

_WEIGHTINGS = ("uniform", "similarity", "softmax")


class KNNRouter:
    """Route each prompt to ``argmax_m s_hat(m) - lam * c_hat(m)`` from its k nearest labelled prompts.

    Parameters
    ----------
    k : int, default 100
        Neighbours per query (the paper's well-tuned setting is 100). Must not exceed the support size.
    weighting : {"uniform", "similarity", "softmax"}, default "uniform"
        Neighbour weights: uniform mean (the paper), ``max(sim, 0)``, or ``exp((sim - sim_max) / temperature)``.
    temperature : float, default 0.05
        Softmax temperature (only used with ``weighting="softmax"``).
    shrinkage : float, default 0.0
        Pseudo-count toward each model's support-set mean: ``(sum w s + beta prior) / (sum w + beta)``.
        A model with no observed neighbour falls back to its mean whatever ``shrinkage`` is.
    n_threads : int, default 0
        Threads for batch calls (0: all cores). A single query always runs on the calling thread.

    Attributes
    ----------
    core_ : knnroute_core.Router
        The fitted core router (support set, outcome tables, settings).
    model_names_ : list of str
    n_features_in_ : int
        Embedding dimension d.

    Notes
    -----
    Inputs are converted once to C-contiguous float32 (embeddings, queries, outcome tables): the core
    stores unit-normalised float32 rows, so float64 embeddings lose precision beyond ~1e-7 relative.
    Scores are on [0, 1], costs in USD per query; NaN marks a missing outcome (skipped when averaging).
    Thread-safety: ``predict``/``route``/``route_one`` may be called from many threads at once, also
    while ``add``/``remove`` run (the core serialises updates with a reader-writer lock).
    """

    def __init__(
        self,
        k: int = 100,
        weighting: str = "uniform",
        temperature: float = 0.05,
        shrinkage: float = 0.0,
        n_threads: int = 0,
    ) -> None:
        self.k = k
        self.weighting = weighting
        self.temperature = temperature
        self.shrinkage = shrinkage
        self.n_threads = n_threads

    # -- fitting -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {self.weighting!r}")
        if self.weighting == "softmax" and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for softmax weighting, got {self.temperature!r}")
        if not (np.isfinite(self.shrinkage) and self.shrinkage >= 0):
            raise ValueError(f"shrinkage must be finite and >= 0, got {self.shrinkage!r}")

    def fit(
        self,
        X: Any,
        scores: Any,
        costs: Any,
        model_names: Sequence[str] | None = None,
        X_val: Any = None,
        scores_val: Any = None,
        costs_val: Any = None,
    ) -> KNNRouter:
        """Store the support set.

        Parameters
        ----------
        X : array-like (n, d)
            Prompt embeddings (any non-zero finite rows; normalised by the core).
        scores, costs : array-like (n, M)
            True outcomes per prompt and model; scores in [0, 1], costs in USD (>= 0); NaN = missing.
        model_names : sequence of M str, optional
        X_val, scores_val, costs_val : ignored
            Accepted for the common router interface (the kNN router has nothing to tune at fit time;
            see ``knnroute.evaluate.tuning`` for choosing k / weighting / shrinkage on validation).

        Returns
        -------
        self
        """
        self._check_params()
        X32 = as_queries(X, name="X")
        n, d = X32.shape
        if n == 0:
            raise ValueError("X is empty: a kNN router needs at least one labelled prompt")
        S32, C32 = check_outcomes(scores, costs, n)
        if self.k > n:
            raise ValueError(
                f"k={self.k} exceeds the support size n={n}; use k <= {n} (or add more labelled prompts)"
            )
        self.model_names_ = resolve_model_names(model_names, S32.shape[1])
        self.core_ = knnroute_core.Router(
            X32, S32, C32, int(self.k), self.weighting, float(self.temperature), float(self.shrinkage)
        )
        self.n_features_in_ = d
        return self

    # -- queries -----------------------------------------------------------------------------
    def _fitted(self) -> knnroute_core.Router:
        core = getattr(self, "core_", None)
        if core is None:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(X, scores, costs) before using it"
            )
        return core

    def _queries(self, X: Any) -> np.ndarray:
        core = self._fitted()
        Q = as_queries(X, name="X", dim=core.dim)
        return Q

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predicted score and cost per model.

        Parameters
        ----------
        X : array-like (n, d) or (d,)

        Returns
        -------
        s_hat, c_hat : ndarray float32 (n, M)
        """
        Q = self._queries(X)
        return self._fitted().predict(Q, int(self.n_threads))

    def route(self, X: Any, lam: Any, return_names: bool = False) -> np.ndarray:
        """Routed model per query: ``argmax_m s_hat - lam * c_hat`` (ties: cheaper, then lower index).

        Parameters
        ----------
        X : array-like (n, d) or (d,)
        lam : float or 1-D array of L floats
            Cost weight in score units per USD (scores on [0, 1]).
        return_names : bool, default False
            Return model names instead of indices.

        Returns
        -------
        ndarray (n,) if ``lam`` is a scalar, else (n, L): int64 indices, or object array of names.
        """
        Q = self._queries(X)
        lams, scalar = lam_array(lam)
        out = self._fitted().route(Q, lams, int(self.n_threads))
        if scalar:
            out = out[:, 0]
        if return_names:
            return np.asarray(self.model_names_, dtype=object)[out]
        return out

    def route_one(self, x: np.ndarray, lam: float) -> int:
        """Fused hot path: one float32 C-contiguous query (d,) -> routed model index.

        No conversion is done here (a float64 or strided query raises ``TypeError``); use
        ``route`` for convenience.
        """
        return self._fitted().route_one(x, float(lam))

    def kneighbors(self, X: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine neighbours: (indices int64 (n, k), similarities float32 (n, k))."""
        Q = self._queries(X)
        core = self._fitted()
        kk = min(self.k, core.size) if k is None else k
        return core.search(Q, int(kk), int(self.n_threads))

    def confidence(self, X: Any, lam: float) -> dict[str, np.ndarray]:
        """Per-query confidence signals (paper §8) at one ``lam``.

        Returns a dict of arrays (n,): ``model`` (routed index), ``kth_similarity`` (cosine of the k-th
        neighbour: low means the prompt is far from the support set) and ``agreement`` (share of the
        k neighbours whose own best observed model at ``lam`` is the routed one).
        """
        Q = self._queries(X)
        core = self._fitted()
        out = {"model": np.empty(len(Q), np.int64), "kth_similarity": np.empty(len(Q), np.float32),
               "agreement": np.empty(len(Q), np.float32)}
        for i in range(len(Q)):
            d = core.route_one_detail(Q[i], float(lam))
            out["model"][i] = d["model"]
            out["kth_similarity"][i] = d["kth_similarity"]
            out["agreement"][i] = d["agreement"]
        return out

    def __repr__(self) -> str:
        return (
            f"KNNRouter(k={self.k}, weighting={self.weighting!r}, temperature={self.temperature}, "
            f"shrinkage={self.shrinkage})"
        )
