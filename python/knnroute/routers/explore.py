"""Exploration for routing with outcome feedback (bandit feedback: only the routed model's outcome is seen).

The kNN router's prediction for a model is a weighted mean over the neighbours that observed it, so its
uncertainty is known per prompt: ``count`` (the effective number of those neighbours) and ``spread`` (the
weighted standard deviation of their scores), both from :meth:`KNNRouter.predict_stats
<knnroute.routers.knn.KNNRouter.predict_stats>` or ``ProductionRouter.decide`` (``RouteDecision.count``,
``.spread``). A policy turns ``(s_hat, c_hat, count, spread, lam)`` into the model to call:

* ``greedy``: ``argmax s_hat - lam c_hat`` (the router's own choice; no exploration);
* ``uniform``: epsilon-greedy, a uniformly random model with probability ``epsilon``;
* ``thompson``: one draw per model from a normal posterior of its mean score, ``N(s_hat, sd^2)``, then
  ``argmax draw - lam c_hat``; ``sd = scale * sqrt((n spread^2 + n0 prior_sd^2) / (n + n0)) / sqrt(n + n0)``
  with ``n = count`` and ``n0 = prior_count`` (the prior: a Bernoulli(0.5)'s 0.5, worth ``n0`` rows), so a
  model whose neighbours disagree, or that few neighbours observed, is tried more often, and one
  that many agreeing neighbours observed almost never against the favourite;
* ``ucb``: ``argmax s_hat + scale * sd - lam c_hat`` (optimism instead of sampling; deterministic).

Routing decisions the client made are not explored: callers apply a policy only to requests the router
decides (not to an explicit model name, nor to a session pinned to a model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["POLICIES", "ExplorePolicy", "choose", "posterior_sd"]

POLICIES = ("greedy", "uniform", "thompson", "ucb")


def posterior_sd(count: Any, spread: Any, prior_count: float = 1.0, prior_sd: float = 0.5) -> np.ndarray:
    """Standard deviation of each model's mean score (see the module docstring), float64 like ``count``."""
    n = np.maximum(np.asarray(count, dtype=np.float64), 0.0)
    sp = np.nan_to_num(np.asarray(spread, dtype=np.float64))
    n0 = float(prior_count)
    var = (n * sp * sp + n0 * prior_sd * prior_sd) / (n + n0)
    return np.sqrt(var / (n + n0))


def _argmax(u: np.ndarray, c: np.ndarray) -> int:
    """argmax of u; ties to the cheaper model, then the lower index (the core's rule)."""
    best = np.flatnonzero(u == u.max())
    if len(best) == 1:
        return int(best[0])
    cb = c[best]
    return int(best[np.flatnonzero(cb == cb.min())[0]])


@dataclass(frozen=True)
class ExplorePolicy:
    """How routed requests explore; ``choose`` picks the model. See the module docstring.

    Parameters
    ----------
    name : {"greedy", "uniform", "thompson", "ucb"}
    epsilon : float
        ``uniform`` only: probability of a uniformly random model.
    scale : float
        Multiplier of the posterior's standard deviation (``thompson``, ``ucb``). The default 0.5 was
        chosen on the RouterBench replays of ``bench/online_learning.py`` with k = 100 (from 0.25, 0.5, 1;
        with k = 20, 0.25 did better: see ``docs/online-learning.md``).
    prior_count, prior_sd : float
        The prior's weight in rows and its standard deviation (``thompson``, ``ucb``).
    """

    name: str = "thompson"
    epsilon: float = 0.1
    scale: float = 0.5
    prior_count: float = 1.0
    prior_sd: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"explore policy must be one of {POLICIES}, got {self.name!r}")
        for key in ("epsilon", "scale", "prior_count", "prior_sd"):
            v = float(getattr(self, key))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"explore {key} must be finite and >= 0, got {v!r}")
        if self.epsilon > 1:
            raise ValueError(f"explore epsilon must be in [0, 1], got {self.epsilon!r}")
        if self.prior_count <= 0:
            raise ValueError("explore prior_count must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExplorePolicy:
        return cls(**d)

    def choose(self, s_hat: Any, c_hat: Any, count: Any, spread: Any, lam: float,
               rng: np.random.Generator | None = None, allowed: Any = None) -> int:
        """The model index to call for one request (arrays (M,); ``rng``: default a fresh generator;
        ``allowed``: optional (M,) booleans, the models that may be called, e.g. those with an upstream)."""
        s = np.asarray(s_hat, dtype=np.float64)
        c = np.asarray(c_hat, dtype=np.float64)
        lam = float(lam)
        ok = np.ones(len(s), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
        if ok.shape != s.shape or not ok.any():
            raise ValueError("allowed must be M booleans with at least one True")
        off = np.where(ok, 0.0, -np.inf)
        if self.name == "greedy":
            return _argmax(s - lam * c + off, c)
        gen = rng if rng is not None else np.random.default_rng()
        if self.name == "uniform":
            if gen.random() < self.epsilon:
                return int(gen.choice(np.flatnonzero(ok)))
            return _argmax(s - lam * c + off, c)
        sd = self.scale * posterior_sd(count, spread, self.prior_count, self.prior_sd)
        if self.name == "ucb":
            return _argmax(s + sd - lam * c + off, c)
        return _argmax(s + sd * gen.standard_normal(len(s)) - lam * c + off, c)


def choose(s_hat: Any, c_hat: Any, count: Any, spread: Any, lam: float, policy: str | ExplorePolicy = "thompson",
           rng: np.random.Generator | None = None, allowed: Any = None) -> int:
    """``ExplorePolicy(policy).choose(...)`` for a policy name (or a policy)."""
    p = policy if isinstance(policy, ExplorePolicy) else ExplorePolicy(name=policy)
    return p.choose(s_hat, c_hat, count, spread, lam, rng, allowed)
