"""A router you can run in production: names, prices, embedder, ids, live updates, budgets, fallback.

:class:`ProductionRouter` wraps a fitted :class:`~knnroute.routers.knn.KNNRouter` (its compiled core does
the work) and adds what a service needs:

* model names and prices, prompt ids (``remove_ids``), the embedder identity and prefix-stripping state
  so ``route_prompts`` embeds new text exactly like the support set;
* live updates without a refit: ``add`` (new labelled prompts), ``add_model`` (outcomes of a new model
  on the current prompts), ``remove_ids``. Routing may run on any number of threads during updates: the
  core takes a shared lock per query and an exclusive lock per update, so every answer is the answer of
  the router before or after each update (serial-equivalent). Updates are serialised among themselves
  by a Python lock that also keeps ``ids`` in step with the core's rows;
* budgets: a table of (lambda, mean cost, mean score, share per model) on held-out prompts
  (:meth:`budget_table`), from which :meth:`lambda_for_budget` and :meth:`lambda_for_share` pick lambda;
* a fallback model when the router is unsure (k-th neighbour too far, or low neighbour agreement);
* ``save(path)`` / :func:`knnroute.load` (see :mod:`knnroute.persist`).

Units: scores on [0, 1], costs in USD per query, lambda in score per USD (as in ``KNNRouter``).
"""

from __future__ import annotations

import inspect
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BudgetPoint", "BudgetTable", "FallbackPolicy", "ProductionRouter", "RouteDecision"]

# Budget tables longer than this are thinned (keeping every Pareto point) before being stored.
MAX_BUDGET_POINTS = 2048


# ------------------------------------------------------------------------------------------ policies
@dataclass(frozen=True)
class FallbackPolicy:
    """Send a query to ``model`` when the router is unsure.

    Parameters
    ----------
    model : str
        The fallback model (one of the router's models; typically the strongest).
    max_distance : float, optional
        Fall back when the cosine distance to the k-th neighbour, ``1 - kth_similarity``, exceeds this
        (the prompt is far from everything labelled).
    min_agreement : float, optional
        Fall back when fewer than this share of the k neighbours have the routed model as their own best
        observed model at this lambda.
    """

    model: str
    max_distance: float | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("FallbackPolicy.model must be a model name")
        for name in ("max_distance", "min_agreement"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"FallbackPolicy.{name} must be a finite number or None, got {v!r}")

    def reason(self, kth_similarity: float, agreement: float) -> str | None:
        """``"distance"``, ``"agreement"`` or None (no fallback)."""
        if self.max_distance is not None and 1.0 - float(kth_similarity) > self.max_distance:
            return "distance"
        if self.min_agreement is not None and float(agreement) < self.min_agreement:
            return "agreement"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FallbackPolicy:
        unknown = set(d) - {"model", "max_distance", "min_agreement"}
        if unknown:
            raise ValueError(f"fallback policy has unknown fields {sorted(unknown)}")
        return cls(d.get("model"), d.get("max_distance"), d.get("min_agreement"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class BudgetPoint:
    """One operating point: lambda and what it gave on the held-out prompts."""

    lam: float
    mean_cost: float  # USD per query
    mean_score: float  # on [0, 1]
    shares: dict[str, float]  # share of queries routed to each model
    feasible: bool = True  # False when no point meets the target (the closest one is returned)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BudgetTable:
    """The router's operating points on held-out data, one per segment of the exact lambda sweep.

    Attributes
    ----------
    lams : (P,) float64, increasing
        A lambda inside each segment (the midpoint; the last segment extends to infinity).
    mean_cost, mean_score : (P,) float64
        Mean true cost (USD) and score ([0, 1]) over the held-out prompts at that lambda (missing
        cells filled by the evaluation conventions).
    shares : (P, M) float64
        Share of held-out prompts routed to each model.
    model_names : list of str
    n : int
        Held-out prompts the table was measured on.
    """

    lams: np.ndarray
    mean_cost: np.ndarray
    mean_score: np.ndarray
    shares: np.ndarray
    model_names: list[str]
    n: int
    source: str = ""

    def __post_init__(self) -> None:
        self.lams = np.asarray(self.lams, dtype=np.float64).ravel()
        self.mean_cost = np.asarray(self.mean_cost, dtype=np.float64).ravel()
        self.mean_score = np.asarray(self.mean_score, dtype=np.float64).ravel()
        self.shares = np.asarray(self.shares, dtype=np.float64).reshape(len(self.lams), -1)
        P = len(self.lams)
        if P == 0:
            raise ValueError("a budget table needs at least one point")
        if len(self.mean_cost) != P or len(self.mean_score) != P:
            raise ValueError("budget table: lams, mean_cost and mean_score must have one length")
        if self.shares.shape[1] != len(self.model_names):
            raise ValueError("budget table: shares must have one column per model")
        for a in (self.lams, self.mean_cost, self.mean_score, self.shares):
            if not np.all(np.isfinite(a)):
                raise ValueError("budget table values must be finite")

    def point(self, i: int, feasible: bool = True) -> BudgetPoint:
        return BudgetPoint(
            lam=float(self.lams[i]),
            mean_cost=float(self.mean_cost[i]),
            mean_score=float(self.mean_score[i]),
            shares={m: float(s) for m, s in zip(self.model_names, self.shares[i])},
            feasible=feasible,
        )

    def _best(self, ok: np.ndarray) -> int:
        """Among the points with ``ok``, the highest score (ties: lower cost, then smaller lambda)."""
        idx = np.flatnonzero(ok)
        order = np.lexsort((self.lams[idx], self.mean_cost[idx], -self.mean_score[idx]))
        return int(idx[order[0]])

    def for_budget(self, max_cost: float) -> BudgetPoint:
        """The best-scoring point with mean cost <= ``max_cost`` (else the cheapest, ``feasible=False``)."""
        if not math.isfinite(max_cost):
            raise ValueError(f"max_cost must be finite, got {max_cost!r}")
        ok = self.mean_cost <= max_cost * (1 + 1e-12)
        if not ok.any():
            cheapest = np.flatnonzero(self.mean_cost == self.mean_cost.min())
            return self.point(self._best(np.isin(np.arange(len(self.lams)), cheapest)), feasible=False)
        return self.point(self._best(ok))

    def for_share(self, model: str, max_share: float) -> BudgetPoint:
        """The best-scoring point sending at most ``max_share`` of queries to ``model``
        (else the point with the smallest share, ``feasible=False``)."""
        if model not in self.model_names:
            raise ValueError(f"unknown model {model!r}; the router's models are {self.model_names}")
        if not (0.0 <= max_share <= 1.0):
            raise ValueError(f"max_share must be in [0, 1], got {max_share!r}")
        col = self.shares[:, self.model_names.index(model)]
        ok = col <= max_share + 1e-12
        if not ok.any():
            return self.point(self._best(col == col.min()), feasible=False)
        return self.point(self._best(ok))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lams": self.lams.tolist(),
            "mean_cost": self.mean_cost.tolist(),
            "mean_score": self.mean_score.tolist(),
            "shares": self.shares.tolist(),
            "model_names": list(self.model_names),
            "n": int(self.n),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetTable:
        names = d["model_names"]
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ValueError("budget table model_names must be a list of str")
        return cls(
            lams=np.asarray(d["lams"], dtype=np.float64),
            mean_cost=np.asarray(d["mean_cost"], dtype=np.float64),
            mean_score=np.asarray(d["mean_score"], dtype=np.float64),
            shares=np.asarray(d["shares"], dtype=np.float64),
            model_names=list(names),
            n=int(d.get("n", 0)),
            source=str(d.get("source", "")),
        )


@dataclass
class RouteDecision:
    """One routed query: the chosen model, predictions and confidence."""

    model: str
    index: int
    lam: float
    s_hat: np.ndarray  # (M,) float32
    c_hat: np.ndarray  # (M,) float32
    kth_similarity: float
    agreement: float
    routed_model: str  # the router's own choice (differs from ``model`` on fallback)
    fallback: str | None = None  # reason, when the fallback model was used
    budget: BudgetPoint | None = field(default=None)


# ------------------------------------------------------------------------------------------- router
class _RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation).

    Guards the one update that changes the number of models (``add_model``) against queries, so that a
    query's (M,) predictions, its routed index and the model-name list it is reported with all belong
    to the same M. (The core itself is safe on its own: its ``predict`` / ``route_one_detail`` check the
    output width under the core's lock and retry; an earlier binding sized outputs outside it, a
    heap-buffer-overflow found by the ASan run of the concurrency stress test and now fixed in C++,
    see tests/test_core.py::test_add_model_concurrent_with_predict.) Row updates (add/remove) do not
    change output sizes and need no Python lock on the query path.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _embedder_spec(emb: Any) -> str | None:
    """A portable spec that rebuilds ``emb`` (a registered name when it is the bundled MiniLM)."""
    spec = getattr(emb, "spec", None)  # registered embedders that know their own name (WordLlama)
    if isinstance(spec, str) and spec:
        return spec
    name = getattr(emb, "name", None)
    if name == "all-MiniLM-L6-v2":
        return "minilm"
    path = getattr(emb, "path", None)
    return str(path) if path is not None else None


class ProductionRouter:
    """A fitted kNN router plus what serving needs (see the module docstring).

    Parameters
    ----------
    router : KNNRouter or TunedKNNRouter
        Fitted. A TunedKNNRouter contributes its chosen ``router_``.
    ids : sequence of str, optional
        One unique id per support row (default ``"0" .. "n-1"``).
    prices : mapping model -> (input, output) USD per 1M tokens, optional
    embedder : spec, Embedder, or dict, optional
        The embedder of the support set: a :func:`knnroute.embed.get_embedder` spec (``"minilm"``), an
        :class:`~knnroute.embed.Embedder`, or ``{"identity": ..., "spec": ...}``. Only its identity and
        spec are stored; the model loads on first use.
    prefix_stripper : dict, optional
        ``PrefixStripper.to_dict()`` state of the support set (``ds.meta["prefix_stripper"]``), applied to
        new prompts before embedding.
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
        embedder: Any = None,
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
        self._width_lock = _RWLock()  # see _RWLock: add_model vs queries whose outputs are (M,)
        self._embed_lock = threading.Lock()
        self._embedder_obj: Any = None
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
        self.embedder_info: dict[str, Any] = self._resolve_embedder_info(embedder)
        if embedder is not None and not isinstance(embedder, (Mapping, str, os.PathLike)):
            self._embedder_obj = embedder if hasattr(embedder, "encode") else None
        if prefix_stripper is not None:
            self.embedder_info["prefix_stripper"] = dict(prefix_stripper)
        self._stripper: Any = None
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
    @staticmethod
    def _resolve_embedder_info(embedder: Any) -> dict[str, Any]:
        if embedder is None:
            return {"identity": None, "spec": None, "dim": None}
        if isinstance(embedder, Mapping):
            info = {"identity": embedder.get("identity"), "spec": embedder.get("spec"), "dim": embedder.get("dim")}
            if embedder.get("prefix_stripper") is not None:
                info["prefix_stripper"] = dict(embedder["prefix_stripper"])
            for key in ("identity", "spec"):
                if info[key] is not None and not isinstance(info[key], str):
                    raise ValueError(f"embedder {key} must be a string")
            return info
        from knnroute.embed import get_embedder

        if isinstance(embedder, (str, os.PathLike)):
            spec: str | None = str(embedder)
            emb = get_embedder(spec)
        else:
            emb = get_embedder(embedder)
            spec = _embedder_spec(emb)
        return {"identity": emb.identity, "spec": spec, "dim": getattr(emb, "_dim", None)}

    def embedder(self) -> Any:
        """The recorded embedder, built once (loads the model's weights lazily on first encode).

        Raises ``ValueError`` if the router has none, or if the spec now resolves to a different
        identity (other weights or truncation than the support set was embedded with).
        """
        if self._embedder_obj is not None:
            return self._embedder_obj
        with self._embed_lock:
            if self._embedder_obj is None:
                info = self.embedder_info
                if not info.get("identity"):
                    raise ValueError("this router has no recorded embedder: route embeddings, or set_embedder(...)")
                if not info.get("spec"):
                    raise ValueError(
                        f"embedder {info['identity']!r} cannot be rebuilt from the file (no spec): "
                        "call set_embedder(embedder) with the same model"
                    )
                from knnroute.embed import get_embedder

                emb = get_embedder(info["spec"])
                self._check_identity(emb)
                self._embedder_obj = emb
        return self._embedder_obj

    def _check_identity(self, emb: Any) -> None:
        want = self.embedder_info.get("identity")
        if want and emb.identity != want:
            raise ValueError(
                f"embedder mismatch: the router was fitted with {want!r}, but {emb.identity!r} is loaded; "
                "embed with the same model (or refit)"
            )

    def set_embedder(self, embedder: Any) -> None:
        """Use this embedder for ``route_prompts`` (its identity must match the recorded one, if any)."""
        from knnroute.embed import get_embedder

        emb = get_embedder(embedder)
        self._check_identity(emb)
        if not self.embedder_info.get("identity"):
            self.embedder_info.update(identity=emb.identity, spec=_embedder_spec(emb))
        self._embedder_obj = emb

    @property
    def has_embedder(self) -> bool:
        return bool(self.embedder_info.get("identity")) or self._embedder_obj is not None

    def embed(self, prompts: Sequence[str], images: Sequence[Any] | None = None) -> np.ndarray:
        """Embed prompts like the support set: strip the learned shared prefix, then encode.

        ``images`` (optional, one entry per prompt: None, one image or a list of images; an image is a
        file path, bytes or base64 text) needs a multimodal embedder
        (:class:`~knnroute.embed.multimodal.MultimodalEmbedder`); a prompt without images is embedded by
        its text alone. Returns (n, d) float32 unit rows. Encoding is serialised by a lock (fast
        tokenizers are not safe to share between threads).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of str, not one str")
        texts = list(prompts)
        emb = self.embedder()
        state = self.embedder_info.get("prefix_stripper")
        if state and state.get("prefixes"):
            if self._stripper is None:
                from knnroute.data.hygiene import PrefixStripper

                self._stripper = PrefixStripper.from_dict(state)
            texts = self._stripper.transform(texts)
        items: list[Any] = texts
        if images is not None:
            items = self._with_images(emb, texts, images)
        with self._embed_lock:
            X = emb.encode(items, batch_size=64, progress=False)
        if X.shape[1] != self.dim:
            raise ValueError(f"embedder gives dimension {X.shape[1]}, the router has {self.dim}")
        return X

    @staticmethod
    def _with_images(emb: Any, texts: list[str], images: Sequence[Any]) -> list[Any]:
        """Pair texts with their images as MultimodalInput items (the embedder must take images)."""
        if getattr(emb, "modality", "text") != "multimodal":
            raise ValueError(
                f"this router's embedder {emb.identity!r} takes text only: images need a router fitted on "
                "multimodal embeddings (knnroute.embed.multimodal.MultimodalEmbedder)"
            )
        if isinstance(images, (str, bytes)) or len(images) != len(texts):
            raise ValueError("images must be a sequence with one entry (None, an image or a list) per prompt")
        from knnroute.embed.multimodal import MultimodalInput

        out: list[Any] = []
        for t, im in zip(texts, images):
            imgs = () if im is None else tuple(im) if isinstance(im, (list, tuple)) else (im,)
            out.append(MultimodalInput(t, imgs))
        return out

    def embed_one(self, prompt: str) -> np.ndarray:
        """One prompt -> (d,) float32 unit vector: the single-prompt path of :meth:`embed`.

        Same prefix stripping and embedder, but through ``Embedder.encode_one`` (the static embedder's
        lean tokenize-gather-sum path; other embedders fall back to ``encode``).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        emb = self.embedder()
        state = self.embedder_info.get("prefix_stripper")
        if state and state.get("prefixes"):
            if self._stripper is None:
                from knnroute.data.hygiene import PrefixStripper

                self._stripper = PrefixStripper.from_dict(state)
            prompt = self._stripper.transform([prompt])[0]
        with self._embed_lock:
            x = emb.encode_one(prompt)
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
    def resolve_lambda(self, lam: float | None = None, max_cost: float | None = None) -> tuple[float, BudgetPoint | None]:
        """Lambda from an explicit value, a budget (``max_cost`` via the budget table) or the default."""
        if lam is not None and max_cost is not None:
            raise ValueError("give either lam or max_cost, not both")
        if max_cost is not None:
            if self.budget is None:
                raise ValueError("this router has no budget table: pass lam (or fit with held-out data)")
            bp = self.budget.for_budget(float(max_cost))
            return bp.lam, bp
        lam = self.default_lambda if lam is None else float(lam)
        if not math.isfinite(lam):
            raise ValueError(f"lam must be finite, got {lam!r}")
        return lam, None

    def decide(self, x: np.ndarray, lam: float | None = None, max_cost: float | None = None) -> RouteDecision:
        """Route one query vector (d,) with confidence and the fallback policy (fused core path)."""
        q = np.ascontiguousarray(x, dtype=np.float32)
        if q.ndim != 1:
            raise ValueError(f"a query must be one vector (d,), got shape {q.shape}")
        if q.shape[0] != self.dim:
            raise ValueError(f"query has dimension {q.shape[0]} but the router has {self.dim}")
        if not np.isfinite(q).all():
            raise ValueError("query holds NaN or inf")
        if not q.any():
            raise ValueError("query is a zero vector: it has no cosine similarity")
        lam_v, bp = self.resolve_lambda(lam, max_cost)
        with self._width_lock.read():
            d = self.core.route_one_detail(q, lam_v)
        names = self._names
        idx = int(d["model"])
        routed = names[idx]
        reason = None
        chosen, chosen_idx = routed, idx
        fb = self.fallback
        if fb is not None:
            reason = fb.reason(d["kth_similarity"], d["agreement"])
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
            from knnroute.routers._validation import as_queries

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
        """(s_hat, c_hat) float32 (n, M)."""
        with self._width_lock.read():
            return self.knn.predict(X)

    # ------------------------------------------------------------------------------ updates
    def add(self, X: Any, scores: Any, costs: Any, ids: Sequence[str] | None = None) -> list[str]:
        """Add labelled prompts without a refit.

        Parameters
        ----------
        X : (n, d) embeddings (non-zero, finite; normalised by the core)
        scores, costs : (n, M) outcomes for every current model, NaN where not observed
        ids : n new unique ids, optional (default: ``"auto-<counter>"``)

        Returns
        -------
        The ids of the new rows.
        """
        from knnroute.routers._validation import as_queries, check_outcomes

        Xq = as_queries(X, name="X", dim=self.dim)
        n = Xq.shape[0]
        if n == 0:
            return []
        S, C = check_outcomes(scores, costs, n)
        with self._update_lock:
            if S.shape[1] != self.n_models:
                raise ValueError(f"scores/costs have {S.shape[1]} model columns, the router has {self.n_models}")
            if ids is None:
                new = [f"auto-{self._next_auto + i}" for i in range(n)]
            else:
                new = [str(i) for i in ids]
                if len(new) != n:
                    raise ValueError(f"{len(new)} ids for {n} new rows")
            if len(set(new)) != n or any(i in self._row for i in new):
                raise ValueError("new ids must be unique and not already in the router")
            self.core.add(Xq, S, C)
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
        import knnroute_core

        from knnroute.evaluate.curves import fill_missing

        ts, tc = fill_missing(scores, costs)
        if ts.shape[1] != self.n_models:
            raise ValueError(f"held-out outcomes have {ts.shape[1]} models, the router has {self.n_models}")
        s_hat, c_hat = self.predict(X)
        if ts.shape[0] != s_hat.shape[0]:
            raise ValueError("held-out X and outcomes disagree on the number of prompts")
        lam_b, _, _ = knnroute_core.sweep(
            np.ascontiguousarray(s_hat), np.ascontiguousarray(c_hat), np.ascontiguousarray(ts),
            np.ascontiguousarray(tc)
        )
        lam_b = np.asarray(lam_b, dtype=np.float64)
        # one lambda strictly inside each segment [lam_b[p], lam_b[p+1])
        nxt = np.append(lam_b[1:], np.inf)
        mids = np.where(np.isfinite(nxt), 0.5 * (lam_b + nxt), 2.0 * lam_b + 1.0)
        idx = np.asarray(knnroute_core.route(s_hat, c_hat, mids))  # (B, P)
        rows = np.arange(ts.shape[0])[:, None]
        mc = tc[rows, idx].mean(axis=0)
        ms = ts[rows, idx].mean(axis=0)
        M = self.n_models
        shares = np.stack([(idx == m).mean(axis=0) for m in range(M)], axis=1)
        keep = _thin(mc, ms, MAX_BUDGET_POINTS)
        table = BudgetTable(mids[keep], mc[keep], ms[keep], shares[keep], self.model_names, int(ts.shape[0]), source)
        if store:
            self.budget = table
        return table

    def _table(self, X: Any, scores: Any, costs: Any) -> BudgetTable:
        if X is not None:
            return self.budget_table(X, scores, costs, store=False)
        if self.budget is None:
            raise ValueError("no budget table: pass held-out X, scores, costs (or call budget_table first)")
        return self.budget

    def lambda_for_budget(self, max_cost: float, X: Any = None, scores: Any = None, costs: Any = None) -> BudgetPoint:
        """Lambda with the best held-out mean score whose held-out mean cost per query is <= ``max_cost``.

        Uses the stored budget table, or measures one on ``(X, scores, costs)``. The returned point
        carries the expected mean score and cost there (``feasible=False``: no point fits the budget;
        the cheapest point is returned).
        """
        return self._table(X, scores, costs).for_budget(float(max_cost))

    def lambda_for_share(self, model: str, max_share: float, X: Any = None, scores: Any = None,
                         costs: Any = None) -> BudgetPoint:
        """Lambda with the best held-out mean score that sends at most ``max_share`` of queries to ``model``."""
        return self._table(X, scores, costs).for_share(model, float(max_share))

    # ------------------------------------------------------------------------------ fallback
    def set_fallback(self, policy: FallbackPolicy | Mapping[str, Any] | None) -> None:
        """Set (or clear with None) the fallback policy."""
        if policy is not None and not isinstance(policy, FallbackPolicy):
            policy = FallbackPolicy.from_dict(policy)
        if policy is not None and policy.model not in self._names:
            raise ValueError(f"fallback model {policy.model!r} is not one of the router's models {self._names}")
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
        dist = None if distance_quantile is None else float(np.quantile(1.0 - conf["kth_similarity"], distance_quantile))
        agr = None if agreement_quantile is None else float(np.quantile(conf["agreement"], agreement_quantile))
        policy = FallbackPolicy(model, dist, agr)
        self.set_fallback(policy)
        return policy

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """A consistent snapshot for saving: arrays and JSON-able metadata."""
        with self._update_lock:
            core = self.core
            X = np.asarray(core.embeddings())
            S = np.asarray(core.scores())
            C = np.asarray(core.costs())
            emb = dict(self.embedder_info)
            return {
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
                },
                "embedder": emb,
                "budget": None if self.budget is None else self.budget.to_dict(),
                "fallback": None if self.fallback is None else self.fallback.to_dict(),
                "default_lambda": self.default_lambda,
                "meta": _jsonable(self.meta),
            }

    def save(self, path: str | os.PathLike, precision: str = "f32") -> Path:
        """Write the router to ``path`` atomically (see :mod:`knnroute.persist`)."""
        from knnroute.persist import write_router_file

        return write_router_file(self, path, precision=precision)

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], X: np.ndarray, S: np.ndarray, C: np.ndarray) -> ProductionRouter:
        """Rebuild from validated file metadata and arrays (the core copies the arrays)."""
        from knnroute.routers.knn import KNNRouter

        knn = meta["knn"]
        n = X.shape[0]
        kw: dict[str, Any] = {
            "k": min(int(knn["k"]), n),  # removals may have left fewer rows than k (core uses min(k, n))
            "weighting": knn["weighting"],
            "temperature": float(knn["temperature"]),
            "shrinkage": float(knn["shrinkage"]),
        }
        prec = knn.get("precision", "f32")
        if "precision" in inspect.signature(KNNRouter.__init__).parameters:
            kw["precision"] = prec
        elif prec not in (None, "f32"):
            raise ValueError(f"router precision {prec!r} needs a knnroute whose KNNRouter supports precision=")
        router = KNNRouter(**kw).fit(X, S, C, model_names=meta["model_names"])
        prices = meta.get("prices") or None
        if prices is not None:
            prices = {m: (p[0], p[1]) for m, p in prices.items()}
        prod = cls(
            router,
            ids=meta["ids"],
            prices=prices,
            embedder=meta.get("embedder"),
            budget=meta.get("budget"),
            fallback=meta.get("fallback"),
            default_lambda=float(meta.get("default_lambda", 0.0)),
            meta=meta.get("meta") or {},
        )
        return prod


def _thin(cost: np.ndarray, score: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep: all when few; else every Pareto point (cheaper-and-better frontier) plus an even
    subsample, in the original (lambda) order."""
    P = len(cost)
    if P <= max_points:
        return np.arange(P)
    order = np.lexsort((-score, cost))
    pareto, best = [], -np.inf
    for i in order:
        if score[i] > best:
            pareto.append(i)
            best = score[i]
    rest = max(max_points - len(pareto), 2)
    even = np.linspace(0, P - 1, rest).round().astype(np.int64)
    return np.unique(np.concatenate([np.asarray(pareto, dtype=np.int64), even]))


def _jsonable(x: Any) -> Any:
    """Plain JSON types (NumPy scalars/arrays converted; non-finite floats -> None)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)
