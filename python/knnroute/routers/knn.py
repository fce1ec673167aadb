"""The kNN router on the compiled core (scikit-learn conventions)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import knnroute_core
from knnroute.routers.base import (
    NotFittedError,
    ParamsMixin,
    as_queries,
    check_outcomes,
    lam_array,
    resolve_model_names,
)

_WEIGHTINGS = ("uniform", "similarity", "softmax")
_PRECISIONS = ("f32", "bf16", "f16", "int8")
_INDEXES = ("exact", "hnsw")


class _HNSWIndex:
    """Approximate cosine top-k with hnswlib (inner product on unit rows), seeded and thread-bounded.

    Returns the same (indices int64, similarities float32) contract as the exact core search, rows
    ordered by similarity descending; hnswlib breaks exact ties by graph order, not by index.
    """

    def __init__(
        self, X: np.ndarray, m: int, ef_construction: int, ef: int, n_threads: int, seed: int
    ) -> None:
        import hnswlib  # optional dependency (the "bench" extra); imported only for index="hnsw"

        n, d = X.shape
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        self.index = hnswlib.Index(space="ip", dim=d)
        self.index.init_index(
            max_elements=n, M=int(m), ef_construction=int(ef_construction), random_seed=int(seed)
        )
        self.index.set_num_threads(n_threads if n_threads > 0 else max(1, os.cpu_count() or 1))
        self.index.add_items(np.ascontiguousarray(Xn, dtype=np.float32), np.arange(n))
        self.ef = int(ef)
        self.index.set_ef(self.ef)
        self.m = int(m)
        self.n = n
        self.d = d

    def search(self, Q: np.ndarray, k: int, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(max(self.ef, k))
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        labels, dist = self.index.knn_query(Q, k=k, num_threads=n_threads if n_threads > 0 else -1)
        return labels.astype(np.int64, copy=False), np.ascontiguousarray(1.0 - dist, dtype=np.float32)

    def memory_bytes(self) -> int:
        # hnswlib's level-0 layout: per element the vector (4 d bytes), 2 M links (4 bytes each) plus a
        # 4-byte count, the 8-byte label; upper levels add ~1/M of that on average.
        per = 4 * self.d + (2 * self.m + 1) * 4 + 8
        return int(self.n * per * (1.0 + 1.0 / self.m))


def _column_means(A: np.ndarray) -> np.ndarray:
    """Per-column mean over non-NaN cells (0 for an all-NaN column), float32: the core's priors."""
    obs = ~np.isnan(A)
    cnt = obs.sum(0)
    tot = np.where(obs, A, 0.0).astype(np.float64).sum(0)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0).astype(np.float32)


class KNNRouter(ParamsMixin):
    """Route each prompt to ``argmax_m s_hat(m) - lam * c_hat(m)`` from its k nearest labelled prompts.

    Parameters
    ----------
    k : int, default 100
        Neighbours per query (the paper's well-tuned setting is 100). Must not exceed the support size.
    weighting : {"uniform", "similarity", "softmax"}, default "uniform"
        Neighbour weights: uniform mean (the paper), ``max(sim, 0)``, or
        ``exp((sim - sim_max) / temperature)``.
    temperature : float, default 0.05
        Softmax temperature (only used with ``weighting="softmax"``).
    shrinkage : float, default 0.0
        Pseudo-count toward each model's support-set mean: ``(sum w s + beta prior) / (sum w + beta)``.
        A model with no observed neighbour falls back to its mean whatever ``shrinkage`` is.
    n_threads : int, default 0
        Threads for batch calls (0: all cores). A single query runs on the calling thread, or is split
        over the core's blocking worker pool when the support set is large (``n_threads=1``: never).
    precision : {"f32", "bf16", "f16", "int8"}, default "f32"
        Storage of the copy a single query scans (exact index only). Every precision returns the f32
        neighbours exactly: the compact scan keeps each row whose error-bounded similarity can reach
        the top k and re-ranks those candidates in float32 (see ``docs/internals.md``). bf16/f16 halve,
        int8 quarters, the bytes a query reads; memory grows by 2 (1) bytes per value, since the
        float32 rows stay for the re-rank.
    index : {"exact", "hnsw"}, default "exact"
        ``"hnsw"``: approximate neighbours from an hnswlib graph (for very large support sets);
        aggregation and routing stay in the core. Live ``add``/``remove`` are exact-index only.
    hnsw_m, hnsw_ef_construction, hnsw_ef : int, default 16, 100, 128
        hnswlib graph degree, build beam and query beam (the beam is raised to k when smaller).
    random_state : int, default 0
        Seed of the hnswlib graph.
    half_life : float, default 0.0
        Time decay (exact index): a support row of time ``t`` weighs ``2 ** (-(now - t) / half_life)``,
        ``now`` being the latest row time; rows from ``fit`` are time 0, rows added live carry their own
        (``core_.add(..., times=...)``; the gateway: its feedback sequence number). 0: no decay.
    common_radius : bool, default True
        Once some row misses a model (feedback rows), each model with k observing rows averages all its
        observing rows within the widest of the models' k-th neighbours (one region of prompts for every
        model); False: only its own k nearest observing rows. Full-information routers are unaffected.

    Attributes
    ----------
    core_ : knnroute_core.Router
        The fitted core router (support set, outcome tables, settings); for ``index="hnsw"`` it holds
        only a one-row support set and is used for its outcome tables' priors and aggregation settings.
    index_ : _HNSWIndex or None
        The hnswlib index (``index="hnsw"``).
    model_names_ : list of str
    n_features_in_ : int
        Embedding dimension d.

    Notes
    -----
    Inputs are converted once to C-contiguous float32 (embeddings, queries, outcome tables): the core
    stores unit-normalised float32 rows, so float64 embeddings lose precision beyond ~1e-7 relative.
    Scores are on [0, 1], costs in USD per query; NaN marks a missing outcome (skipped when averaging).
    Neighbourhoods are per model (exact index): each model's prediction comes from the k nearest rows
    that observed it (score not NaN), found in the same scan. When every row observes every model
    (full information) that is the plain top-k, and results are those of the plain top-k bit for bit;
    a row observing one model (outcome feedback) never displaces another model's neighbours.
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
        precision: str = "f32",
        index: str = "exact",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 100,
        hnsw_ef: int = 128,
        random_state: int = 0,
        half_life: float = 0.0,
        common_radius: bool = True,
    ) -> None:
        self.k = k
        self.weighting = weighting
        self.temperature = temperature
        self.shrinkage = shrinkage
        self.n_threads = n_threads
        self.precision = precision
        self.index = index
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef = hnsw_ef
        self.random_state = random_state
        self.half_life = half_life
        self.common_radius = common_radius

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
        if not (np.isfinite(self.half_life) and self.half_life >= 0):
            raise ValueError(f"half_life must be finite and >= 0 (0: no decay), got {self.half_life!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        if self.index not in _INDEXES:
            raise ValueError(f"index must be one of {_INDEXES}, got {self.index!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

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
            see ``knnroute.routers.tuned`` for choosing k / weighting / shrinkage on validation).

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
        qt = 1 if int(self.n_threads) == 1 else 0
        if self.index == "hnsw":
            self.index_: _HNSWIndex | None = _HNSWIndex(X32, self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef,
                                     int(self.n_threads), int(self.random_state))
            # The outcome tables live in Python; the core only aggregates and routes.
            self._S = S32
            self._C = C32
            self._prior_s = _column_means(S32)
            self._prior_c = _column_means(C32)
            self.core_ = knnroute_core.Router(
                X32[:1], S32[:1], C32[:1], 1, self.weighting, float(self.temperature), float(self.shrinkage)
            )
        else:
            self.index_ = None
            self.core_ = knnroute_core.Router(
                X32, S32, C32, int(self.k), self.weighting, float(self.temperature), float(self.shrinkage),
                self.precision, qt,
            )
            if self.half_life:
                self.core_.half_life = float(self.half_life)
            if not self.common_radius:
                self.core_.common_radius = False
        self.n_features_in_ = d
        self.n_support_ = n
        return self

    # -- approximate path ------------------------------------------------------------------------
    def _hnsw_predict(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(self.k), self.n_support_)
        assert self.index_ is not None  # only called with index="hnsw"
        idx, sim = self.index_.search(Q, k, int(self.n_threads))
        return knnroute_core.aggregate(
            idx, sim, self._S, self._C, self.weighting, float(self.temperature), float(self.shrinkage),
            self._prior_s, self._prior_c,
        )

    def memory_bytes(self) -> int:
        """Bytes held by the fitted router: support rows (every copy) or the hnswlib graph, plus outcomes."""
        core = self._fitted()
        if self.index_ is not None:
            return self.index_.memory_bytes() + self._S.nbytes + self._C.nbytes
        return int(core.memory_bytes)

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
        if self.index_ is not None:
            return self._hnsw_predict(Q)
        return self._fitted().predict(Q, int(self.n_threads))

    def predict_stats(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``predict`` plus the posterior's width per model (exact index): ``(s_hat, c_hat, count,
        spread)``, float32 (n, M) each. ``count`` is the effective number of neighbours that observed
        the model, ``(sum w)^2 / sum w^2`` of their weights (k for uniform weights, less with decay or
        softmax); ``spread`` the weighted standard deviation of their scores. ``s_hat``/``c_hat`` equal
        :meth:`predict`'s bit for bit. Used by :mod:`knnroute.routers.explore`."""
        Q = self._queries(X)
        if self.index_ is not None:
            raise NotImplementedError("predict_stats needs index='exact'")
        out = self._fitted().predict_stats(Q, int(self.n_threads))
        return out[0], out[1], out[2], out[3]

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
        if self.index_ is not None:
            s_hat, c_hat = self._hnsw_predict(Q)
            out = knnroute_core.route(s_hat, c_hat, lams)
        else:
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
        core = self._fitted()
        if self.index_ is not None:
            s_hat, c_hat = self._hnsw_predict(x[None, :])
            return int(knnroute_core.route(s_hat, c_hat, [float(lam)])[0, 0])
        return core.route_one(x, float(lam))

    def kneighbors(self, X: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine neighbours: (indices int64 (n, k), similarities float32 (n, k))."""
        Q = self._queries(X)
        core = self._fitted()
        if self.index_ is not None:
            kk = min(self.k, self.n_support_) if k is None else k
            return self.index_.search(Q, int(kk), int(self.n_threads))
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
        if self.index_ is not None:
            raise NotImplementedError("confidence() needs index='exact'")
        out: dict[str, np.ndarray] = {
            "model": np.empty(len(Q), np.int64),
            "kth_similarity": np.empty(len(Q), np.float32),
            "agreement": np.empty(len(Q), np.float32),
        }
        for i in range(len(Q)):
            d = core.route_one_detail(Q[i], float(lam))
            out["model"][i] = d["model"]
            out["kth_similarity"][i] = d["kth_similarity"]
            out["agreement"][i] = d["agreement"]
        return out

    def __repr__(self) -> str:
        return (
            f"KNNRouter(k={self.k}, weighting={self.weighting!r}, temperature={self.temperature}, "
            f"shrinkage={self.shrinkage}, precision={self.precision!r}, index={self.index!r}"
            + (f", half_life={self.half_life}" if self.half_life else "") + ")"
        )
