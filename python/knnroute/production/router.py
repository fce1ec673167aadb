"""A router you can run in production: names, prices, embedder, ids, live updates, budgets, fallback.

:class:`ProductionRouter` wraps a fitted :class:`~knnroute.routers.knn.KNNRouter` (its compiled core does
the work) and adds what a service needs:

* model names and prices, prompt ids (``remove_ids``), and a
  :class:`~knnroute.embed.prompt.PromptEncoder` (``encoder``: the embedder identity and prefix-stripping
  state) so ``route_prompts`` embeds new text exactly like the support set;
* live updates without a refit: ``add`` (new labelled prompts), ``add_model`` (outcomes of a new model
  on the current prompts), ``remove_ids``. Routing may run on any number of threads during updates: the
  core takes a shared lock per query and an exclusive lock per update, so every answer is the answer of
  the router before or after each update (serial-equivalent). Updates are serialised among themselves
  by a Python lock that also keeps ``ids`` in step with the core's rows;
* budgets: a table of (lambda, mean cost, mean score, share per model) on held-out prompts
  (:meth:`budget_table`), from which :meth:`lambda_for_budget` and :meth:`lambda_for_share` pick lambda;
* a fallback model when the router is unsure (k-th neighbour too far, or low neighbour agreement);
* certified policies (``quality_floor``...: :mod:`.guarantee`); ``save(path)`` / :func:`knnroute.load`.

Budgets, the fallback policy and the reader-writer lock are in :mod:`.budgets`, :mod:`.fallback` and
:mod:`.lock`. Queries are validated once, by the core (shape, dimension, NaN/inf, zero vectors, finite
lambda), whose messages say what to do.

Units: scores on [0, 1], costs in USD per query, lambda in score per USD (as in ``KNNRouter``)."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.embed.prompt import PromptEncoder
from knnroute.production.bounds import Bounds, bounds_from_meta, calibrate_bounds, decision_bounds
from knnroute.production.budgets import BudgetPoint, BudgetTable, measure_budget
from knnroute.production.decision import RouteDecision
from knnroute.production.fallback import FallbackPolicy
from knnroute.production.guarantee import GuaranteeTable, calibrate_router, resolve_policy, table_from_meta
from knnroute.production.lock import RWLock
from knnroute.production.persist import jsonable, write_state

__all__ = ["ProductionRouter", "RouteDecision"]


# ------------------------------------------------------------------------------------------- router
class ProductionRouter:
    """A fitted kNN router plus what serving needs (see the module docstring).

    Parameters
    ----------
    router : KNNRouter or TunedKNNRouter
        Fitted. A TunedKNNRouter contributes its chosen ``router_``.
    ids : sequence of str, optional
        One unique id per support row (default ``"0" .. "n-1"``).
    prices : mapping model -> (input, output) USD per 1M tokens, optional
    embedder : PromptEncoder, spec, Embedder, or dict, optional
        How new prompts are embedded: a :class:`~knnroute.embed.prompt.PromptEncoder` (held as is), or
        what builds one: a :func:`knnroute.embed.get_embedder` spec (``"minilm"``), an
        :class:`~knnroute.embed.Embedder`, or ``{"identity": ..., "spec": ...}``. Only its identity and
        spec are stored; the model loads on first use. The router holds it as ``encoder``.
    prefix_stripper : dict, optional
        ``PrefixStripper.to_dict()`` state of the support set (``ds.meta["prefix_stripper"]``), applied to
        new prompts before embedding (with a spec, Embedder or dict ``embedder`` only).
    budget : BudgetTable or dict, optional
    fallback : FallbackPolicy or dict, optional
    default_lambda : float
        Lambda used when a request names none.
    meta : dict, optional
        Free-form facts stored in the file (dataset, tuning result...).
    """

    def __init__(
        self,
        router: Any,
        *,
        ids: Sequence[str] | None = None,
        prices: Mapping[str, Any] | None = None,
        embedder: PromptEncoder | Any = None,
        prefix_stripper: Mapping[str, Any] | None = None,
        budget: BudgetTable | Mapping[str, Any] | None = None,
        fallback: FallbackPolicy | Mapping[str, Any] | None = None,
        default_lambda: float = 0.0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        inner = getattr(router, "router_", router)  # TunedKNNRouter -> its KNNRouter
        core = getattr(inner, "core_", None)
        if core is None:
            raise ValueError(f"{type(router).__name__} is not a fitted KNNRouter (no core_): fit it first")
        if getattr(inner, "index_", None) is not None or getattr(inner, "index", "exact") != "exact":
            raise ValueError("ProductionRouter needs an exact-index KNNRouter (index='exact'): live updates, "
                             "confidence and the fused single-query path run on the core's exact index")
        self.knn = inner
        self._update_lock = threading.RLock()
        self._width_lock = RWLock()  # see RWLock: add_model vs queries whose outputs are (M,)
        n = core.size
        self._ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        if len(self._ids) != n:
            raise ValueError(f"ids has {len(self._ids)} entries for {n} support rows")
        self._row = {k: r for r, k in enumerate(self._ids)}
        if len(self._row) != n:
            raise ValueError("ids must be unique")
        self._next_auto = n
        self._names = list(inner.model_names_)
        self.prices: dict[str, tuple[float, float]] = {}
        for m, p in (prices or {}).items():
            if m not in self._names:
                raise ValueError(f"price for unknown model {m!r}")
            pin, pout = (float(p[0]), float(p[1]))
            if not (math.isfinite(pin) and math.isfinite(pout) and pin >= 0 and pout >= 0):
                raise ValueError(f"price of {m!r} must be two finite numbers >= 0, got {p!r}")
            self.prices[m] = (pin, pout)
        if isinstance(embedder, PromptEncoder):
            if prefix_stripper is not None:
                raise ValueError("give prefix_stripper to the PromptEncoder, not beside it")
            self.encoder = embedder
        else:
            self.encoder = PromptEncoder(embedder, prefix_stripper)
        self.budget = (
            budget if isinstance(budget, BudgetTable) or budget is None else BudgetTable.from_dict(budget)
        )
        if self.budget is not None and self.budget.model_names != self._names[: len(self.budget.model_names)]:
            raise ValueError("budget table models do not match the router's models")
        self.fallback: FallbackPolicy | None = None
        self.set_fallback(fallback)
        if not math.isfinite(float(default_lambda)):
            raise ValueError("default_lambda must be finite")
        self.default_lambda = float(default_lambda)
        self.meta: dict[str, Any] = dict(meta or {})
        # certified operating points (knnroute.production.guarantee), kept in meta["guarantee"]
        self.guarantee: GuaranteeTable | None = table_from_meta(self.meta, self._names)
        self.bounds: Bounds | None = bounds_from_meta(self.meta, self._names)  # per-decision, in meta["bounds"]

    # ------------------------------------------------------------------------------ properties
    @property
    def core(self) -> Any:
        return self.knn.core_

    @property
    def model_names(self) -> list[str]:
        return list(self._names)

    @property
    def ids(self) -> list[str]:
        with self._update_lock:
            return list(self._ids)

    @property
    def dim(self) -> int:
        return int(self.core.dim)

    @property
    def size(self) -> int:
        return int(self.core.size)

    def __len__(self) -> int:
        return self.size

    @property
    def n_models(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        emb = self.embedder_info.get("identity") or "none"
        return (
            f"ProductionRouter(n={self.size}, dim={self.dim}, models={self.n_models}, k={self.core.k}, "
            f"weighting={self.core.weighting!r}, embedder={emb!r})"
        )

    # ---------------------------------------------------------------------------- embedder
    @property
    def embedder_info(self) -> dict[str, Any]:
        """The recorded embedder: ``identity``, ``spec``, ``dim`` and ``prefix_stripper`` (the encoder's)."""
        return self.encoder.info

    def embedder(self) -> Any:
        """The recorded embedder, built once (see :meth:`PromptEncoder.embedder
        <knnroute.embed.prompt.PromptEncoder.embedder>`)."""
        return self.encoder.embedder()

    def set_embedder(self, embedder: Any) -> None:
        """Use this embedder for ``route_prompts`` (its identity must match the recorded one, if any)."""
        self.encoder.set_embedder(embedder)

    @property
    def has_embedder(self) -> bool:
        return self.encoder.has_embedder

    def embed(self, prompts: Sequence[str], images: Sequence[Any] | None = None) -> np.ndarray:
        """Embed prompts like the support set (prefix stripping, images: see :meth:`PromptEncoder.encode
        <knnroute.embed.prompt.PromptEncoder.encode>`). Returns (n, d) float32 unit rows."""
        X = self.encoder.encode(prompts, images)
        if X.shape[1] != self.dim:
            raise ValueError(f"embedder gives dimension {X.shape[1]}, the router has {self.dim}")
        return X

    def embed_one(self, prompt: str) -> np.ndarray:
        """One prompt -> (d,) float32 unit vector: the single-prompt path of :meth:`embed`."""
        x = self.encoder.encode_one(prompt)
        if x.shape != (self.dim,):
            raise ValueError(f"embedder gives dimension {x.shape[-1]}, the router has {self.dim}")
        return x

    def route_prompt(self, prompt: str, lam: float | None = None, max_cost: float | None = None,
                     image: Any = None) -> RouteDecision:
        """Prompt text (and optionally an image or a list of images: path, bytes or base64) ->
        :class:`RouteDecision` (single prompt, single thread: the low-latency path)."""
        if image is not None:
            return self.decide(self.embed([prompt], [image])[0], lam, max_cost)
        return self.decide(self.embed_one(prompt), lam, max_cost)

    # ------------------------------------------------------------------------------ routing
    def resolve_lambda(self, lam: float | None = None,
                       max_cost: float | None = None) -> tuple[float, BudgetPoint | None]:
        """Lambda from an explicit value, a budget (``max_cost`` via the budget table) or the default."""
        if lam is not None and max_cost is not None:
            raise ValueError("give either lam or max_cost, not both")
        if max_cost is not None:
            if self.budget is None:
                raise ValueError("this router has no budget table: pass lam (or fit with held-out data)")
            bp = self.budget.for_budget(float(max_cost))
            return bp.lam, bp
        # a non-finite lam is refused where it is used: by the core (route_one_detail, route)
        return (self.default_lambda if lam is None else float(lam)), None

    def decide(self, x: np.ndarray, lam: float | None = None, max_cost: float | None = None,
               **policy: float | None) -> RouteDecision:
        """Route one query vector (d,) with confidence and the fallback policy (fused core path). ``policy``:
        at most one of ``quality_floor``, ``max_mean_cost``, ``strong_share`` instead of ``lam`` / ``max_cost``
        (:meth:`calibrate_guarantee`); with none, ``meta["default_policy"]``, else the default lambda."""
        q = np.ascontiguousarray(x, dtype=np.float32)  # shape, NaN and zero rows: checked by the core
        cert = resolve_policy(self.guarantee, lam, max_cost, policy, self.meta.get("default_policy"))
        fixed = cert is not None and cert.lam is None  # nothing certified: every request to the best model
        lam_v, bp = (0.0, None) if fixed else self.resolve_lambda(lam if cert is None else cert.lam,
                                                                  max_cost if cert is None else None)
        with self._width_lock.read():
            d = self.core.route_one_detail(q, lam_v)
        names = self._names
        idx = names.index(cert.model) if fixed and cert is not None and cert.model else int(d["model"])
        routed = names[idx]
        reason = None
        chosen, chosen_idx = routed, idx
        fb, bnd = self.fallback, decision_bounds(self.bounds, d, idx)
        if fb is not None:
            reason = fb.reason(d["kth_similarity"], d["agreement"])
            reason = reason or (None if bnd is None or bnd.status == "ok" else bnd.status)
            if reason is not None and fb.model in names:
                chosen, chosen_idx = fb.model, names.index(fb.model)
        return RouteDecision(
            model=chosen,
            index=chosen_idx,
            lam=lam_v,
            s_hat=d["s_hat"],
            c_hat=d["c_hat"],
            kth_similarity=float(d["kth_similarity"]),
            agreement=float(d["agreement"]),
            routed_model=routed,
            fallback=reason,
            budget=bp,
            policy=cert,
            count=d.get("count"),
            spread=d.get("spread"),
            bounds=bnd,
        )

    def route(self, X: Any, lam: float | None = None, max_cost: float | None = None,
              return_names: bool = True) -> np.ndarray:
        """Batch routing of embeddings (n, d) with the fallback policy applied.

        Without a fallback policy this is ``KNNRouter.route`` (multi-threaded batch path); with one, each
        query goes through :meth:`decide`.
        """
        lam_v, _ = self.resolve_lambda(lam, max_cost)
        if self.fallback is None:
            idx = np.asarray(self.knn.route(X, lam_v))
        else:
            from knnroute.routers.base import as_queries

            Q = as_queries(X, name="X", dim=self.dim)
            idx = np.fromiter((self.decide(q, lam_v).index for q in Q), dtype=np.int64, count=len(Q))
        if return_names:
            return np.asarray(self._names, dtype=object)[idx]
        return idx

    def route_prompts(self, prompts: Sequence[str], lam: float | None = None,
                      max_cost: float | None = None, images: Sequence[Any] | None = None) -> list[str]:
        """Embed ``prompts`` (and ``images``, one entry per prompt; see :meth:`embed`) with the router's
        recorded embedder, route them, return model names."""
        X = self.embed(prompts, images)
        return [str(m) for m in self.route(X, lam, max_cost, return_names=True)]

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(s_hat, c_hat) float32 (n, M); with their bounds: :meth:`predict_bounds`."""
        with self._width_lock.read():
            return self.knn.predict(X)

    def predict_bounds(self, X: Any) -> dict[str, np.ndarray]:
        """s_hat, c_hat and their calibrated bounds (n, M) (:func:`knnroute.production.bounds.predict_bounds`)."""
        from knnroute.production.bounds import predict_bounds

        return predict_bounds(self, X)

    # ------------------------------------------------------------------------------ updates
    def add(self, X: Any, scores: Any, costs: Any, ids: Sequence[str] | None = None,
            times: Any = None) -> list[str]:
        """Add labelled prompts without a refit.

        Parameters
        ----------
        X : (n, d) embeddings (non-zero, finite; normalised by the core)
        scores, costs : (n, M) outcomes for every current model, NaN where not observed (a feedback
            row observes one model: only that model's neighbourhood gains it, see ``KNNRouter``)
        ids : n new unique ids, optional (default: ``"auto-<counter>"``)
        times : n finite times, optional (default 0, the fitted rows' time): what the time decay
            (``half_life``) measures age by; the gateway passes each feedback's sequence number

        Returns
        -------
        The ids of the new rows.
        """
        from knnroute.routers.base import as_queries, check_outcomes

        Xq = as_queries(X, name="X", dim=self.dim)
        n = Xq.shape[0]
        if n == 0:
            return []
        S, C = check_outcomes(scores, costs, n)
        with self._update_lock:
            if S.shape[1] != self.n_models:
                raise ValueError(
                    f"scores/costs have {S.shape[1]} model columns, the router has {self.n_models}"
                )
            if ids is None:
                new = [f"auto-{self._next_auto + i}" for i in range(n)]
            else:
                new = [str(i) for i in ids]
                if len(new) != n:
                    raise ValueError(f"{len(new)} ids for {n} new rows")
            if len(set(new)) != n or any(i in self._row for i in new):
                raise ValueError("new ids must be unique and not already in the router")
            if times is not None:
                times = np.ascontiguousarray(times, dtype=np.float64).reshape(-1)
            self.core.add(Xq, S, C, times)
            base = len(self._ids)
            self._ids.extend(new)
            self._row.update({k: base + j for j, k in enumerate(new)})
            self._next_auto += n
        return new

    def add_model(self, name: str, scores: Any, costs: Any, price: tuple[float, float] | None = None) -> None:
        """Add a candidate model with its outcomes on the current support rows.

        ``scores`` / ``costs`` are either arrays (n,) in row order (NaN = not observed) or mappings
        ``id -> value`` for the prompts where the model was observed.
        """
        name = str(name)
        with self._update_lock:
            if name in self._names:
                raise ValueError(f"model {name!r} is already routed")
            n = self.size
            s_col = self._column(scores, n, "scores")
            c_col = self._column(costs, n, "costs")
            if np.isinf(s_col).any() or np.isinf(c_col).any() or (c_col < 0).any():
                raise ValueError("new model outcomes must be finite (NaN = missing) and costs >= 0")
            if np.isnan(s_col).all():
                raise ValueError(f"model {name!r} has no observed score on the support set")
            # No query runs while the core grows a column, so a response's predictions, routed index
            # and names agree on M; the name is published first so no routed index is ever without one.
            with self._width_lock.write():
                self._names.append(name)
                try:
                    self.core.add_model(s_col, c_col)
                except BaseException:
                    self._names.pop()
                    raise
            self.knn.model_names_ = list(self._names)
            if price is not None:
                self.prices[name] = (float(price[0]), float(price[1]))

    def _column(self, values: Any, n: int, what: str) -> np.ndarray:
        if isinstance(values, Mapping):
            col = np.full(n, np.nan, dtype=np.float32)
            for k, v in values.items():
                r = self._row.get(str(k))
                if r is None:
                    raise ValueError(f"{what}: unknown prompt id {k!r}")
                col[r] = float(v)
            return col
        col = np.ascontiguousarray(values, dtype=np.float32)
        if col.shape != (n,):
            raise ValueError(f"{what} must have one value per support row ({n},), got shape {col.shape}")
        return col

    def remove_ids(self, ids: Sequence[str]) -> int:
        """Remove support rows by prompt id; returns how many were removed. Unknown ids raise."""
        if isinstance(ids, str):
            ids = [ids]
        with self._update_lock:
            want = list(dict.fromkeys(str(i) for i in ids))
            missing = [i for i in want if i not in self._row]
            if missing:
                raise KeyError(f"unknown prompt id(s): {missing[:5]}")
            rows = sorted(self._row[i] for i in want)
            if not rows:
                return 0
            self.core.remove(rows)
            drop = set(rows)
            self._ids = [k for r, k in enumerate(self._ids) if r not in drop]
            self._row = {k: r for r, k in enumerate(self._ids)}
            return len(rows)

    def calibrate_bounds(self, X: Any, scores: Any, costs: Any, level: float = 0.9) -> Bounds:
        """Per-decision bounds calibrated on held-out prompts (:mod:`knnroute.production.bounds`); stored."""
        self.bounds = calibrate_bounds(self, X, scores, costs, level)
        self.meta["bounds"] = self.bounds.to_dict()
        return self.bounds

    def calibrate_guarantee(self, X: Any, scores: Any, costs: Any, delta: float = 0.1,
                            bound: str = "betting") -> GuaranteeTable:
        """Certify operating points on held-out prompts (:mod:`knnroute.production.guarantee`); stored."""
        self.guarantee = calibrate_router(self, X, scores, costs, delta, bound)
        self.meta["guarantee"] = self.guarantee.to_dict()
        return self.guarantee

    # ------------------------------------------------------------------------------ budgets
    def budget_table(self, X: Any, scores: Any, costs: Any, source: str = "held-out prompts",
                     store: bool = True) -> BudgetTable:
        """Measure the operating points on held-out prompts (one per exact-sweep segment).

        Parameters
        ----------
        X : (B, d) embeddings; scores, costs : (B, M) true outcomes (NaN = missing: a missing score
            counts as 0, a missing cost as the model's mean, as in evaluation).
        store : bool
            Keep the table (saved with the router, used by ``max_cost`` requests).
        """
        s_hat, c_hat = self.predict(X)
        table = measure_budget(s_hat, c_hat, scores, costs, self.model_names, source)
        if store:
            self.budget = table
        return table

    def _table(self, X: Any, scores: Any, costs: Any) -> BudgetTable:
        if X is not None:
            return self.budget_table(X, scores, costs, store=False)
        if self.budget is None:
            raise ValueError("no budget table: pass held-out X, scores, costs (or call budget_table first)")
        return self.budget

    def lambda_for_budget(self, max_cost: float, X: Any = None, scores: Any = None,
                          costs: Any = None) -> BudgetPoint:
        """Lambda with the best held-out mean score whose held-out mean cost per query is <= ``max_cost``.

        Uses the stored budget table, or measures one on ``(X, scores, costs)``. The returned point
        carries the expected mean score and cost there (``feasible=False``: no point fits the budget;
        the cheapest point is returned).
        """
        return self._table(X, scores, costs).for_budget(float(max_cost))

    def lambda_for_share(self, model: str, max_share: float, X: Any = None, scores: Any = None,
                         costs: Any = None) -> BudgetPoint:
        """Lambda with the best held-out mean score that sends at most ``max_share`` of queries to
        ``model``."""
        return self._table(X, scores, costs).for_share(model, float(max_share))

    # ------------------------------------------------------------------------------ fallback
    def set_fallback(self, policy: FallbackPolicy | Mapping[str, Any] | None) -> None:
        """Set (or clear with None) the fallback policy."""
        if policy is not None and not isinstance(policy, FallbackPolicy):
            policy = FallbackPolicy.from_dict(policy)
        if policy is not None and policy.model not in self._names:
            raise ValueError(
                f"fallback model {policy.model!r} is not one of the router's models {self._names}"
            )
        self.fallback = policy

    def calibrate_fallback(self, model: str, X_val: Any, lam: float | None = None,
                           distance_quantile: float | None = 0.95,
                           agreement_quantile: float | None = None) -> FallbackPolicy:
        """A fallback policy whose thresholds are quantiles of held-out prompts' confidence.

        ``distance_quantile=0.95``: prompts farther from their k-th neighbour than 95% of held-out
        prompts fall back (about 5% of in-distribution traffic). ``agreement_quantile=0.05``: the
        least-agreeing 5% fall back.
        """
        lam_v, _ = self.resolve_lambda(lam)
        with self._width_lock.read():
            conf = self.knn.confidence(X_val, lam_v)
        policy = FallbackPolicy.calibrated(model, conf["kth_similarity"], conf["agreement"],
                                           distance_quantile, agreement_quantile)
        self.set_fallback(policy)
        return policy

    @property
    def half_life(self) -> float:
        """Time decay of the support rows (see ``KNNRouter``); 0: off. Settable live."""
        return float(self.core.half_life)

    @half_life.setter
    def half_life(self, h: float) -> None:
        with self._update_lock:
            self.core.half_life = float(h)
            self.knn.half_life = float(h)

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """A consistent snapshot for saving: arrays and JSON-able metadata."""
        with self._update_lock:
            core = self.core
            X = np.asarray(core.embeddings())
            S = np.asarray(core.scores())
            C = np.asarray(core.costs())
            emb = dict(self.embedder_info)
            T = np.asarray(core.times())
            nz = np.flatnonzero(T)
            return {
                # feedback rows' times (only when some row has one: files without them stay as they were)
                **({"row_times": [[int(r), float(T[r])] for r in nz]} if len(nz) else {}),
                "embeddings": X,
                "scores": S,
                "costs": C,
                "ids": list(self._ids),
                "model_names": list(self._names),
                "prices": {m: list(p) for m, p in self.prices.items()} or None,
                "knn": {
                    "k": int(self.knn.k),
                    "weighting": str(core.weighting),
                    "temperature": float(self.knn.temperature),
                    "shrinkage": float(self.knn.shrinkage),
                    "precision": str(getattr(self.knn, "precision", "f32")),
                    **({"half_life": float(core.half_life)} if core.half_life else {}),
                    **({} if core.common_radius else {"common_radius": False}),
                },
                "embedder": emb,
                "budget": None if self.budget is None else self.budget.to_dict(),
                "fallback": None if self.fallback is None else self.fallback.to_dict(),
                "default_lambda": self.default_lambda,
                "meta": jsonable(self.meta),
                **self.encoder.lexical_arrays(),  # the lexical hybrid's arrays (none for a dense router)
            }

    def save(self, path: str | os.PathLike, precision: str = "f32") -> Path:
        """Write the router to ``path`` atomically (see :mod:`knnroute.production.persist`)."""
        return write_state(self.state(), path, precision)
