"""Per-decision bounds: for every model, an interval for the score (and the cost) the request will get,
calibrated by split conformal prediction so that its stated coverage holds on held-out prompts.

What is covered. A request's true score ``s_m`` for model ``m`` is a number in [0, 1]: for most data a 0/1
outcome (correct or not), for some a graded score. The bound ``[lo_m, hi_m]`` is a **prediction interval
for that realised score**: over new prompts like the calibration prompts, ``P(lo_m <= s_m <= hi_m) >= level``
for each model (split conformal: Vovk et al. 2005; Lei et al. 2018). With 0/1 scores an interval is a
prediction set: ``hi < 1`` says "this model will fail here" and ``lo > 0`` "it will succeed", each with the
stated confidence, and ``[0, 1]`` says "either". It is *not* a confidence interval for the model's success
probability on this prompt, which no finite data can check prompt by prompt; it is what can be checked,
and ``experiments/robustness.py`` checks it. Costs get the same kind of interval for the realised cost.

How. The neighbourhood of a request gives, per model, ``s_hat`` (the kNN mean), the effective neighbour
count ``n`` and the weighted spread ``sd`` of the neighbours' scores (``predict_stats`` / the core's
``route_one_detail``). The normalised nonconformity score is ``|s - s_hat| / u`` with
``u = sqrt(sd^2 + gamma^2) * sqrt(1 + 1/n)`` (the spread of one new outcome around a mean of ``n``; ``gamma``
keeps unanimous neighbourhoods from claiming zero width). On ``N`` calibration prompts the router was not
fitted on, per model, ``q_m`` is the ``ceil((N + 1) level)``-th smallest score; a request's interval is
``s_hat +- q_m u``, clipped to [0, 1]. Costs: ``|c - c_hat| / (c_hat + f_m)``, ``f_m`` 5% of the model's
median predicted cost. Too few calibration prompts for the level (``ceil((N + 1) level) > N``): no bound.

Where there is no bound. A request farther from its k-th neighbour than every calibration prompt was
(``1 - kth_similarity > max_distance``) is outside what was calibrated: status ``"far"``. A model whose
neighbourhood has fewer than ``min_count`` effective neighbours that observed it (feedback rows observe one
model) has no bound; when that is the routed model, status ``"sparse"``. Either way the decision says so
and, when the router has a fallback policy, goes to its model (``RouteDecision.fallback`` = the status).

Stored in the router file's ``meta["bounds"]`` (:meth:`Bounds.to_dict`); a file without it (every file
saved before) routes exactly as before and returns no bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Bounds", "DecisionBounds", "bounds_from_meta", "calibrate_bounds", "decision_bounds", "neighbourhood",
           "predict_bounds"]

VERSION = 1


@dataclass(frozen=True)
class DecisionBounds:
    """One request's bounds: per model (M,) arrays, NaN where a model has none."""

    level: float
    status: str  # "ok", "far" (farther than every calibration prompt) or "sparse" (routed model)
    score_lower: np.ndarray
    score_upper: np.ndarray
    cost_lower: np.ndarray
    cost_upper: np.ndarray


@dataclass(frozen=True)
class Bounds:
    """Calibrated conformal quantiles (see the module docstring). ``q_score``/``q_cost``: per model, None
    when the calibration prompts were too few for ``level``."""

    level: float
    q_score: list[float | None]
    q_cost: list[float | None]
    cost_floor: list[float]
    max_distance: float
    gamma: float = 0.05
    min_count: float = 3.0
    n: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise ValueError(f"bounds version {self.version!r} is not supported (this knnroute knows {VERSION})")
        if not (isinstance(self.level, (int, float)) and 0 < self.level < 1):
            raise ValueError(f"bounds level must be in (0, 1), got {self.level!r}")
        m = len(self.q_score)
        if len(self.q_cost) != m or len(self.cost_floor) != m:
            raise ValueError("bounds q_score, q_cost and cost_floor must have one entry per model")
        for v in (*self.q_score, *self.q_cost):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"bounds quantiles must be finite numbers >= 0 or null, got {v!r}")
        for v in (*self.cost_floor, self.max_distance, self.gamma, self.min_count):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"bounds cost_floor, max_distance, gamma, min_count must be finite >= 0, got {v!r}")
        # the per-model arrays, once (NaN: no quantile)
        object.__setattr__(self, "_qs", np.array([np.nan if v is None else v for v in self.q_score], np.float64))
        object.__setattr__(self, "_qc", np.array([np.nan if v is None else v for v in self.q_cost], np.float64))
        object.__setattr__(self, "_cf", np.array(self.cost_floor, np.float64))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Bounds:
        if not isinstance(d, Mapping):
            raise ValueError("meta 'bounds' must be an object")
        fields = {"level", "q_score", "q_cost", "cost_floor", "max_distance", "gamma", "min_count", "n", "version"}
        if set(d) - fields or not {"level", "q_score", "q_cost", "cost_floor", "max_distance"} <= set(d):
            raise ValueError(f"meta 'bounds' must have the fields {sorted(fields)}")
        for key in ("q_score", "q_cost", "cost_floor"):
            if not isinstance(d[key], list):
                raise ValueError(f"bounds {key} must be a list")
        return cls(**{k: d[k] for k in fields if k in d})

    def scale(self, count: np.ndarray, spread: np.ndarray) -> np.ndarray:
        n = np.maximum(np.asarray(count, dtype=np.float64), 1e-9)
        return np.sqrt(np.asarray(spread, dtype=np.float64) ** 2 + self.gamma**2) * np.sqrt(1.0 + 1.0 / n)

    def interval(self, s_hat: Any, c_hat: Any, count: Any, spread: Any,
                 kth: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Arrays (B, M) ``score_lower, score_upper, cost_lower, cost_upper`` (NaN: no bound), ``far`` (B,)
        and ``sparse`` (B, M), from a batch of neighbourhood statistics."""
        sh = np.atleast_2d(np.asarray(s_hat, dtype=np.float64))
        ch = np.atleast_2d(np.asarray(c_hat, dtype=np.float64))
        cnt = np.atleast_2d(np.asarray(count, dtype=np.float64))
        B, M = sh.shape
        qs, qc, cf = self._qs, self._qc, self._cf  # type: ignore[attr-defined]
        if M != qs.size:  # models added after calibration (add_model) have no bound
            pad = np.full(max(M - qs.size, 0), np.nan)
            qs, qc, cf = (np.concatenate([a[:M], pad]) for a in (qs, qc, cf))
            cf = np.nan_to_num(cf)
        far = (1.0 - np.asarray(kth, dtype=np.float64).reshape(B)) > self.max_distance + 1e-7
        sparse = ~(cnt >= self.min_count)
        w = qs * self.scale(cnt, np.atleast_2d(spread))
        wc = qc * (np.maximum(ch, 0.0) + cf)
        w[sparse] = np.nan
        wc[sparse] = np.nan
        w[far] = np.nan
        wc[far] = np.nan
        sl = np.maximum(sh - w, 0.0)  # NaN stays NaN
        su = np.minimum(sh + w, 1.0)
        cl = np.maximum(ch - wc, 0.0)
        cu = ch + wc
        return sl, su, cl, cu, far, sparse


def neighbourhood(router: Any, X: Any) -> tuple[np.ndarray, ...]:
    """``(s_hat, c_hat, count, spread, kth_similarity)`` of each query row, exactly as ``decide`` sees them
    (the core's ``route_one_detail``)."""
    from knnroute.routers.base import as_queries

    Q = as_queries(X, name="X", dim=router.dim)
    B, M = len(Q), router.n_models
    sh, ch, cnt, spr = (np.empty((B, M), np.float32) for _ in range(4))
    kth = np.empty(B, np.float32)
    with router._width_lock.read():
        for i in range(B):
            d = router.core.route_one_detail(Q[i], 0.0)
            sh[i], ch[i], cnt[i], spr[i], kth[i] = d["s_hat"], d["c_hat"], d["count"], d["spread"], d["kth_similarity"]
    return sh, ch, cnt, spr, kth


def _conformal(r: np.ndarray, level: float) -> float | None:
    r = np.sort(r[np.isfinite(r)])
    n = r.size
    j = math.ceil((n + 1) * level)
    return None if n == 0 or j > n else float(r[j - 1])


def calibrate_bounds(router: Any, X: Any, scores: Any, costs: Any, level: float = 0.9, gamma: float = 0.05,
                     min_count: float = 3.0) -> Bounds:
    """:class:`Bounds` from labelled prompts the router was not fitted on (NaN outcomes are skipped)."""
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    sh, ch, cnt, spr, kth = neighbourhood(router, X)
    S = np.asarray(scores, dtype=np.float64)
    C = np.asarray(costs, dtype=np.float64)
    if S.shape != sh.shape or C.shape != sh.shape:
        raise ValueError(f"scores and costs must have shape {sh.shape}, got {S.shape} and {C.shape}")
    if len(S) == 0:
        raise ValueError("calibrating bounds needs at least one labelled prompt")
    M = sh.shape[1]
    cf = [max(0.05 * float(np.median(ch[:, m])), 1e-12) for m in range(M)]
    proto = Bounds(level, [0.0] * M, [0.0] * M, cf, float(np.max(1.0 - kth)), gamma, min_count, len(S))
    ok = cnt >= min_count
    rs = np.where(ok, np.abs(S - sh) / proto.scale(cnt, spr), np.nan)
    rc = np.where(ok, np.abs(C - ch) / (np.maximum(ch, 0.0) + np.asarray(cf)), np.nan)
    return Bounds(level, [_conformal(rs[:, m], level) for m in range(M)],
                  [_conformal(rc[:, m], level) for m in range(M)], cf, proto.max_distance, gamma, min_count, len(S))


def decision_bounds(bounds: Bounds | None, d: Mapping[str, Any], routed: int) -> DecisionBounds | None:
    """A ``route_one_detail`` result's bounds (None without calibrated bounds). The per-request hot path:
    plain floats over the M models (what :meth:`Bounds.interval` computes for a batch, bit for bit in float64)."""
    if bounds is None or d.get("count") is None:
        return None
    sh, ch, cnt, spr = (d[k].tolist() for k in ("s_hat", "c_hat", "count", "spread"))
    M = len(sh)
    nan = math.nan
    if (1.0 - float(d["kth_similarity"])) > bounds.max_distance + 1e-7:
        none = np.full(M, nan)
        return DecisionBounds(bounds.level, "far", none, none.copy(), none.copy(), none.copy())
    g2, mc = bounds.gamma**2, bounds.min_count
    nq = len(bounds.q_score)
    sl, su, cl, cu = [nan] * M, [nan] * M, [nan] * M, [nan] * M
    for m in range(min(M, nq)):
        n = float(cnt[m])
        if not n >= mc:
            continue
        q = bounds.q_score[m]
        if q is not None:
            w = q * (math.sqrt(float(spr[m]) ** 2 + g2) * math.sqrt(1.0 + 1.0 / max(n, 1e-9)))
            sl[m], su[m] = max(sh[m] - w, 0.0), min(sh[m] + w, 1.0)
        qc = bounds.q_cost[m]
        if qc is not None:
            wc = qc * (max(ch[m], 0.0) + bounds.cost_floor[m])
            cl[m], cu[m] = max(ch[m] - wc, 0.0), ch[m] + wc
    status = "sparse" if not float(cnt[routed]) >= mc else "ok"
    return DecisionBounds(bounds.level, status, np.array(sl), np.array(su), np.array(cl), np.array(cu))


def predict_bounds(router: Any, X: Any) -> dict[str, np.ndarray]:
    """Batch form for a :class:`~knnroute.production.router.ProductionRouter` with calibrated bounds:
    ``s_hat, c_hat, score_lower, score_upper, cost_lower, cost_upper`` (B, M), NaN where there is no bound,
    and ``far`` (B,)."""
    if router.bounds is None:
        raise ValueError("this router has no calibrated bounds: calibrate_bounds(X, scores, costs) on held-out "
                         "prompts (knnroute fit does it)")
    sh, ch, cnt, spr, kth = neighbourhood(router, X)
    sl, su, cl, cu, far, _ = router.bounds.interval(sh, ch, cnt, spr, kth)
    return {"s_hat": sh, "c_hat": ch, "score_lower": sl, "score_upper": su, "cost_lower": cl, "cost_upper": cu,
            "far": far}


def bounds_from_meta(meta: Mapping[str, Any], model_names: Sequence[str]) -> Bounds | None:
    """The bounds in a router's ``meta["bounds"]`` (validated), or None."""
    if meta.get("bounds") is None:
        return None
    b = Bounds.from_dict(meta["bounds"])
    if len(b.q_score) > len(model_names):
        raise ValueError(f"meta 'bounds' has {len(b.q_score)} models, the router {len(model_names)}")
    return b
