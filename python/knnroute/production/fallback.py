"""The fallback policy: send a query to a fixed model when the router is unsure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["FallbackPolicy"]


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
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"FallbackPolicy.{name} must be a finite number or None, got {v!r}")

    def reason(self, kth_similarity: float, agreement: float) -> str | None:
        """``"distance"``, ``"agreement"`` or None (no fallback)."""
        if self.max_distance is not None and 1.0 - float(kth_similarity) > self.max_distance:
            return "distance"
        if self.min_agreement is not None and float(agreement) < self.min_agreement:
            return "agreement"
        return None

    @classmethod
    def calibrated(cls, model: str, kth_similarity: Any, agreement: Any, distance_quantile: float | None,
                   agreement_quantile: float | None) -> FallbackPolicy:
        """Thresholds at quantiles of held-out confidence: the distance ``1 - kth_similarity`` at
        ``distance_quantile`` and the agreement at ``agreement_quantile`` (None: no such threshold)."""
        dist = agr = None
        if distance_quantile is not None:
            dist = float(np.quantile(1.0 - np.asarray(kth_similarity), distance_quantile))
        if agreement_quantile is not None:
            agr = float(np.quantile(np.asarray(agreement), agreement_quantile))
        return cls(model, dist, agr)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FallbackPolicy:
        unknown = set(d) - {"model", "max_distance", "min_agreement"}
        if unknown:
            raise ValueError(f"fallback policy has unknown fields {sorted(unknown)}")
        return cls(d.get("model"), d.get("max_distance"), d.get("min_agreement"))  # type: ignore[arg-type]
