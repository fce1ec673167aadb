"""Routing with a guarantee: the cheapest operating point whose quality (or mean cost) is certified on
held-out data, with a finite-sample, distribution-free bound (Learn-then-Test, fixed-sequence testing over
the lambda path, Hoeffding-Bentkus p-values).

Setting. A fitted router, a fixed grid of lambdas (from the training costs, so it does not depend on the
calibration prompts), and ``n`` labelled calibration prompts the router was not fitted on, exchangeable with
future traffic. For each lambda, routing gives each calibration prompt a quality ``q_i(lambda)`` and a cost
``c_i(lambda)``; ``s*_i`` is the quality of the best single model (the best mean on the router's own rows).

* ``quality_floor = a``: certify ``E[q(lambda)] >= a * E[s*]``. Per prompt the loss
  ``l_i = (a s*_i - q_i + 1) / (1 + a)`` lies in [0, 1] and ``E[l] < 1 / (1 + a)`` is exactly the claim;
  the null ``E[l] >= 1/(1 + a)`` is rejected when the Hoeffding-Bentkus p-value is at most ``delta``.
  Lambdas are tested in a fixed order, from the highest-quality end (lambda = 0) to the cheapest, and the
  walk stops at the first that is not certified: with probability at least ``1 - delta`` over the
  calibration draw, every certified lambda meets the floor (fixed-sequence testing controls the
  family-wise error at ``delta`` without any correction). The cheapest certified lambda is chosen. When
  even lambda = 0 is not certified the policy routes everything to the best single model, which meets any
  floor <= 1 by definition.
* ``max_mean_cost = X`` (USD per request): the same with the loss ``c_i / B`` (``B`` bounds a request's
  cost: the largest cost in the training and calibration data), tested from the cheapest lambda towards the
  most expensive, each with its upper confidence bound on the mean cost; the highest-quality certified
  lambda is chosen, and none certified means the cheapest point, flagged ``certified = False``.
* ``strong_share = p``: RouteLLM's dial, for parity: the highest-quality lambda that sends at most ``p`` of
  the calibration prompts to the most expensive model (no bound: a share is a setting, not a risk).

Per-request floors are rounded up to the table's grid of floors (a higher floor is a stricter claim, so the
guarantee still holds). Reference: Angelopoulos, Bates, Candes, Jordan, Lei, "Learn then Test: Calibrating
Predictive Algorithms to Achieve Risk Control" (2021); Bates et al., "Distribution-free, risk-controlling
prediction sets" (2021) for the Hoeffding-Bentkus p-value; Waudby-Smith and Ramdas, "Estimating means of
bounded random variables by betting" (2023) for the betting p-value used by default (valid like
Hoeffding-Bentkus, much tighter when the losses vary little, as when a router mostly agrees with the best
model: ``experiments/guarantees.py`` measures both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["FLOOR_GRID", "POLICIES", "Certified", "GuaranteeTable", "betting_pvalue", "betting_upper", "calibrate",
           "calibrate_router", "hb_pvalue", "lambda_grid", "resolve_policy", "table_from_meta", "upper_bound"]

FLOOR_GRID = np.round(np.arange(0.5, 1.0 + 1e-9, 0.005), 3)


def _h1(a: float, b: float) -> float:
    """KL divergence of Bernoulli(a) from Bernoulli(b) (Hoeffding's exponent), for 0 <= a <= b < 1."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def hb_pvalue(risk_hat: float, n: int, t: float) -> float:
    """Hoeffding-Bentkus p-value of the null ``E[loss] >= t`` from ``n`` losses in [0, 1] with mean
    ``risk_hat``: ``min(exp(-n h1(min(risk_hat, t), t)), e * P(Binomial(n, t) <= ceil(n risk_hat)))``."""
    from scipy.stats import binom

    if n <= 0:
        return 1.0
    if t >= 1.0:
        return 1.0 if risk_hat >= 1.0 else 0.0
    if t <= 0.0:
        return 1.0
    hoeffding = math.exp(-n * _h1(min(risk_hat, t), t))
    bentkus = math.e * float(binom.cdf(math.ceil(n * risk_hat - 1e-12), n, t))
    return min(1.0, hoeffding, bentkus)


def betting_pvalue(losses: np.ndarray, t: float, delta: float) -> float:
    """p-value of the null ``E[loss] >= t`` from losses in [0, 1], by betting (Waudby-Smith and Ramdas,
    "Estimating means of bounded random variables by betting", 2023): the wealth
    ``K_i = prod_{j <= i} (1 + l_j (t - x_j))`` is a nonnegative supermartingale under the null for bets
    ``0 <= l_j < 1 / (1 - t)`` chosen from ``x_1 .. x_{j-1}`` only (here their predictable plug-in, which
    sizes each bet by the running variance), so ``P(max_i K_i >= 1 / delta) <= delta`` (Ville's
    inequality) and ``1 / max_i K_i`` is a valid p-value. Much tighter than Hoeffding-Bentkus when the losses
    vary little (a router that mostly agrees with the best model). The losses' order must not depend on their
    values (calibration order)."""
    x = np.asarray(losses, dtype=np.float64).ravel()
    n = x.size
    if n == 0 or t <= 0.0:
        return 1.0
    if t >= 1.0:
        return 1.0 if np.all(x >= 1.0) else 0.0
    j = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(x)) / (j + 1)  # WSR's regularised running mean after x_1 .. x_j
    var = (0.25 + np.cumsum((x - mu) ** 2)) / (j + 1)
    var_prev = np.concatenate([[0.25], var[:-1]])  # predictable: from x_1 .. x_{j-1} only
    bet = np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (n * var_prev)), 0.5 / (1.0 - t))
    log_k = np.cumsum(np.log1p(bet * (t - x)))
    return float(min(1.0, math.exp(-max(0.0, float(log_k.max())))))


def upper_bound(risk_hat: float, n: int, delta: float) -> float:
    """The smallest ``t`` whose null ``E[loss] >= t`` is rejected at ``delta``: an upper confidence bound on
    the mean of losses in [0, 1] (1.0 when none below 1 is)."""
    lo, hi = min(max(risk_hat, 0.0), 1.0), 1.0
    if hb_pvalue(risk_hat, n, hi - 1e-12) > delta:
        return 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if hb_pvalue(risk_hat, n, mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def betting_upper(losses: np.ndarray, delta: float) -> float:
    """Upper confidence bound on the mean of losses in [0, 1] by inverting :func:`betting_pvalue`."""
    x = np.asarray(losses, dtype=np.float64)
    lo, hi = float(x.mean()) if x.size else 0.0, 1.0
    if betting_pvalue(x, hi - 1e-9, delta) > delta:
        return 1.0
    for _ in range(30):  # 1e-9 of the cost bound
        mid = 0.5 * (lo + hi)
        if betting_pvalue(x, mid, delta) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def lambda_grid(c_scale: float, n: int = 400) -> np.ndarray:
    """Lambda = 0, then ``n - 1`` log-spaced values over the range where a cost of ``c_scale`` (a typical
    request's cost in the training data) moves the score by 1e-3 to 1e3: fixed before calibration."""
    c = max(float(c_scale), 1e-12)
    return np.concatenate([[0.0], np.logspace(math.log10(1e-3 / c), math.log10(1e3 / c), n - 1)])


@dataclass(frozen=True)
class Certified:
    """The operating point a policy picked."""

    policy: str  # quality_floor | max_mean_cost | strong_share
    value: float  # the requested floor / cost / share
    lam: float | None  # None: every request goes to ``model`` (no lambda certified)
    model: str | None  # the single model used when ``lam`` is None
    certified: bool
    expected_score: float  # calibration mean quality at the point
    expected_cost: float  # calibration mean cost (USD)
    bound: float | None  # floor: the floor certified (rounded up); cost: the upper bound on the mean cost
    delta: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = f"lambda {self.lam:.4g}" if self.lam is not None else f"every request to {self.model}"
        if self.policy == "quality_floor":
            claim = (f"mean quality >= {self.bound:g} x the best single model's, with probability >= "
                     f"{1 - self.delta:g}" + ("" if self.certified else " (no lambda certified: the best model "
                                                                    "itself)"))
        elif self.policy == "max_mean_cost":
            claim = (f"mean cost <= ${self.bound:.4g} per request (upper bound) with probability >= "
                     f"{1 - self.delta:g}" if self.certified else "NOT certified: no lambda meets it; the "
                     "cheapest point")
        else:
            claim = "share of the most expensive model on calibration (no bound)"
        return (f"{self.policy}={self.value:g}: {where}; calibration mean score {self.expected_score:.4f}, "
                f"mean cost ${self.expected_cost:.4g}; {claim} (n = {self.n})")


@dataclass
class GuaranteeTable:
    """What the policies need, measured on calibration prompts (stored in the router file's metadata)."""

    lams: np.ndarray  # (G,) the fixed grid, increasing
    mean_score: np.ndarray  # (G,) calibration mean quality at each lambda
    mean_cost: np.ndarray  # (G,)
    cost_ucb: np.ndarray  # (G,) upper confidence bound (level delta) on the mean cost, USD
    strong_share: np.ndarray  # (G,) share routed to the most expensive model
    floors: np.ndarray  # (F,) grid of quality floors
    floor_index: np.ndarray  # (F,) cheapest certified lambda index per floor, -1: none
    best_model: str
    best_mean: float  # calibration mean quality of the best single model
    best_cost: float  # its calibration mean cost
    strong_model: str
    cost_bound: float  # B
    delta: float
    n: int

    def __post_init__(self) -> None:
        for k in ("lams", "mean_score", "mean_cost", "cost_ucb", "strong_share"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float64).ravel())
        self.floors = np.asarray(self.floors, dtype=np.float64).ravel()
        self.floor_index = np.asarray(self.floor_index, dtype=np.int64).ravel()
        G = len(self.lams)
        if G == 0 or any(len(getattr(self, k)) != G for k in ("mean_score", "mean_cost", "cost_ucb",
                                                              "strong_share")):
            raise ValueError("guarantee table: the per-lambda arrays must be non-empty and of one length")
        if len(self.floors) != len(self.floor_index) or np.any(self.floor_index >= G) or np.any(self.floor_index < -1):
            raise ValueError("guarantee table: floors and floor_index disagree")
        if not (0 < self.delta < 1) or self.n < 1 or not self.cost_bound > 0:
            raise ValueError("guarantee table: delta in (0, 1), n >= 1 and a positive cost bound required")
        for a in (self.lams, self.mean_score, self.mean_cost, self.cost_ucb, self.strong_share, self.floors):
            if not np.all(np.isfinite(a)):
                raise ValueError("guarantee table values must be finite")

    # ------------------------------------------------------------------ policies
    def _point(self, policy: str, value: float, i: int | None, certified: bool, bound: float | None) -> Certified:
        if i is None:
            return Certified(policy, value, None, self.best_model, certified, self.best_mean, self.best_cost,
                             bound, self.delta, self.n)
        return Certified(policy, value, float(self.lams[i]), None, certified, float(self.mean_score[i]),
                         float(self.mean_cost[i]), bound, self.delta, self.n)

    def for_floor(self, floor: float) -> Certified:
        """The cheapest lambda certified for mean quality >= ``floor`` x the best single model's."""
        if not (isinstance(floor, int | float) and math.isfinite(floor) and 0.0 < floor <= 1.0):
            raise ValueError(f"quality_floor must be in (0, 1], got {floor!r}")
        j = int(np.searchsorted(self.floors, floor - 1e-12, side="left"))
        if j >= len(self.floors):
            j = len(self.floors) - 1
        rounded = float(self.floors[j])
        i = int(self.floor_index[j])
        if i < 0:  # nothing certified: the best single model meets the floor by definition
            return self._point("quality_floor", floor, None, False, rounded)
        return self._point("quality_floor", floor, i, True, rounded)

    def for_cost(self, max_mean_cost: float) -> Certified:
        """The highest-quality lambda whose mean cost is certified <= ``max_mean_cost`` (fixed sequence from
        the cheapest lambda); the cheapest point, not certified, when none is."""
        if not (isinstance(max_mean_cost, int | float) and math.isfinite(max_mean_cost) and max_mean_cost >= 0):
            raise ValueError(f"max_mean_cost must be a finite number >= 0, got {max_mean_cost!r}")
        best = None
        for i in range(len(self.lams) - 1, -1, -1):  # cheapest first
            if self.cost_ucb[i] > max_mean_cost:
                break
            best = i
        if best is None:
            i = int(np.argmin(self.mean_cost))
            return self._point("max_mean_cost", max_mean_cost, i, False, float(self.cost_ucb[i]))
        return self._point("max_mean_cost", max_mean_cost, best, True, float(self.cost_ucb[best]))

    def for_share(self, share: float) -> Certified:
        """The highest-quality lambda sending at most ``share`` of calibration prompts to the most expensive
        model (RouteLLM's strong-model share dial; no bound)."""
        if not (isinstance(share, int | float) and math.isfinite(share) and 0.0 <= share <= 1.0):
            raise ValueError(f"strong_share must be in [0, 1], got {share!r}")
        ok = np.flatnonzero(self.strong_share <= share + 1e-12)
        if ok.size == 0:
            i = int(np.argmin(self.strong_share))
            return self._point("strong_share", share, i, False, None)
        i = int(ok[np.argmax(self.mean_score[ok] - 1e-12 * ok)])  # best quality; ties: smaller lambda
        return self._point("strong_share", share, i, True, None)

    def resolve(self, quality_floor: float | None = None, max_mean_cost: float | None = None,
                strong_share: float | None = None) -> Certified | None:
        given = [(k, v) for k, v in (("quality_floor", quality_floor), ("max_mean_cost", max_mean_cost),
                                     ("strong_share", strong_share)) if v is not None]
        if not given:
            return None
        if len(given) > 1:
            raise ValueError(f"give at most one policy, got {', '.join(k for k, _ in given)}")
        k, v = given[0]
        return {"quality_floor": self.for_floor, "max_mean_cost": self.for_cost, "strong_share": self.for_share}[k](v)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GuaranteeTable:
        for k in ("best_model", "strong_model"):
            if not isinstance(d.get(k), str):
                raise ValueError(f"guarantee table: {k} must be a string")
        return cls(lams=np.asarray(d["lams"], dtype=np.float64), mean_score=np.asarray(d["mean_score"]),
                   mean_cost=np.asarray(d["mean_cost"]), cost_ucb=np.asarray(d["cost_ucb"]),
                   strong_share=np.asarray(d["strong_share"]), floors=np.asarray(d["floors"]),
                   floor_index=np.asarray(d["floor_index"]), best_model=d["best_model"],
                   best_mean=float(d["best_mean"]), best_cost=float(d["best_cost"]),
                   strong_model=d["strong_model"], cost_bound=float(d["cost_bound"]), delta=float(d["delta"]),
                   n=int(d["n"]))


def routed_outcomes(s_hat: np.ndarray, c_hat: np.ndarray, scores: Any, costs: Any,
                    lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt and lambda, the true quality and cost of the routed model and its index: (n, G) each
    (missing scores count as 0 and missing costs as the model's mean, as in evaluation)."""
    import knnroute_core
    from knnroute.routers.curves import fill_missing

    ts, tc = fill_missing(scores, costs)
    idx = np.asarray(knnroute_core.route(np.ascontiguousarray(s_hat, dtype=np.float32),
                                         np.ascontiguousarray(c_hat, dtype=np.float32),
                                         np.ascontiguousarray(lams, dtype=np.float64)))
    rows = np.arange(ts.shape[0])[:, None]
    return ts[rows, idx], tc[rows, idx], idx


def calibrate(s_hat: np.ndarray, c_hat: np.ndarray, scores: Any, costs: Any, model_names: list[str],
              best_model: str, lams: np.ndarray, delta: float = 0.1, cost_bound: float | None = None,
              floors: np.ndarray = FLOOR_GRID, bound: str = "betting") -> GuaranteeTable:
    """The guarantee table of a router's predictions ``(s_hat, c_hat)`` on ``n`` calibration prompts with
    true ``scores`` / ``costs`` (n, M). ``best_model``: the best single model, chosen on the router's own
    rows (not on the calibration prompts); ``lams``: the fixed grid (:func:`lambda_grid`); ``bound``: the
    p-values, ``"betting"`` (:func:`betting_pvalue`, the default: tighter) or ``"hb"`` (Hoeffding-Bentkus).
    The calibration prompts' order must not depend on their outcomes (shuffle them if the file is sorted)."""
    from knnroute.routers.curves import fill_missing

    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if bound not in ("betting", "hb"):
        raise ValueError(f"bound must be 'betting' or 'hb', got {bound!r}")
    if best_model not in model_names:
        raise ValueError(f"best_model {best_model!r} is not one of the router's models")
    lams = np.asarray(lams, dtype=np.float64)
    if lams.ndim != 1 or lams.size == 0 or np.any(np.diff(lams) <= 0) or lams[0] < 0:
        raise ValueError("lams must be a non-empty increasing grid of lambdas >= 0")
    q, c, idx = routed_outcomes(s_hat, c_hat, scores, costs, lams)
    n = q.shape[0]
    if n < 1:
        raise ValueError("calibration needs at least one prompt")
    ts, tc = fill_missing(scores, costs)
    b = model_names.index(best_model)
    s_best = ts[:, b]
    B = float(cost_bound) if cost_bound is not None else float(np.max(tc))
    B = max(B, float(np.max(tc)), 1e-300)
    cost_ucb = np.array([B * (upper_bound(float(np.mean(np.minimum(c[:, g], B) / B)), n, delta) if bound == "hb"
                              else betting_upper(np.minimum(c[:, g], B) / B, delta)) for g in range(len(lams))])
    strong = int(np.argmax(tc.mean(axis=0)))
    mean_q, mean_best = q.mean(axis=0), float(s_best.mean())
    floor_index = np.full(len(floors), -1, dtype=np.int64)
    for j, a in enumerate(floors):
        t = 1.0 / (1.0 + a)
        last = -1
        for g in range(len(lams)):  # fixed sequence: from lambda = 0 towards the cheapest
            if bound == "hb":
                risk = (a * mean_best - mean_q[g] + 1.0) / (1.0 + a)  # the mean of the per-prompt losses
                p = hb_pvalue(float(risk), n, t)
            else:
                p = betting_pvalue((a * s_best - q[:, g] + 1.0) / (1.0 + a), t, delta)
            if p > delta:
                break
            last = g
        floor_index[j] = last
    return GuaranteeTable(lams=lams, mean_score=mean_q, mean_cost=c.mean(axis=0), cost_ucb=cost_ucb,
                          strong_share=(idx == strong).mean(axis=0), floors=np.asarray(floors), floor_index=floor_index,
                          best_model=best_model, best_mean=mean_best, best_cost=float(tc[:, b].mean()),
                          strong_model=model_names[strong], cost_bound=B, delta=float(delta), n=int(n))


POLICIES = ("quality_floor", "max_mean_cost", "strong_share")


def resolve_policy(table: GuaranteeTable | None, lam: float | None, max_cost: float | None,
                   policy: Mapping[str, float | None], default: Mapping[str, Any] | None = None) -> Certified | None:
    """The certified point for a request: its policy (at most one of :data:`POLICIES`, not with ``lam`` /
    ``max_cost``), else the router's default policy when the request gives nothing, else None."""
    unknown = set(policy) - set(POLICIES)
    if unknown:
        raise TypeError(f"unknown routing option(s) {sorted(unknown)}; the policies are {list(POLICIES)}")
    given = {k: v for k, v in policy.items() if v is not None}
    if given and (lam is not None or max_cost is not None):
        raise ValueError(f"give either lambda / max_cost or a policy ({', '.join(given)}), not both")
    if not given:
        if lam is not None or max_cost is not None or not default:
            return None
        given = {k: float(v) for k, v in default.items() if k in POLICIES}
    if table is None:
        raise ValueError(f"{', '.join(given)} needs a router calibrated on held-out prompts (knnroute fit does it "
                         "on the validation split; or ProductionRouter.calibrate_guarantee)")
    return table.resolve(**given)


def table_from_meta(meta: Mapping[str, Any], model_names: list[str]) -> GuaranteeTable | None:
    """The table stored in a router's ``meta["guarantee"]`` (validated), or None."""
    if meta.get("guarantee") is None:
        return None
    table = GuaranteeTable.from_dict(meta["guarantee"])
    if {table.best_model, table.strong_model} - set(model_names):
        raise ValueError("the guarantee table names models the router does not have")
    return table


def calibrate_router(router: Any, X: Any, scores: Any, costs: Any, delta: float = 0.1,
                     bound: str = "betting") -> GuaranteeTable:
    """:func:`calibrate` for a :class:`~knnroute.production.ProductionRouter`: its predictions on ``X``, the
    best single model and the lambda grid from its own rows (not from the calibration prompts)."""
    from knnroute.routers.curves import cost_scale, fill_missing

    s_hat, c_hat = router.predict(X)
    own_s, own_c = fill_missing(np.asarray(router.core.scores()), np.asarray(router.core.costs()))
    names = router.model_names
    best = names[int(np.argmax(own_s.mean(axis=0)))]
    return calibrate(s_hat, c_hat, scores, costs, names, best, lambda_grid(cost_scale(own_c)), delta=delta,
                     bound=bound, cost_bound=float(np.max(own_c)))
