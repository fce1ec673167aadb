"""The service's request and response models (pydantic): what ``/route`` and ``/route/batch`` accept.

Validation at the HTTP edge: unknown fields, wrong types (strict: a number must be a JSON number, never
a string or a boolean; a string must be a JSON string), non-finite numbers (``allow_inf_nan=False``), a
negative ``lambda`` or ``max_cost``, a prompt and an embedding together, both ``lambda`` and ``max_cost``.
Size limits that must hold before these models are built are in :mod:`knnroute.service.guard`. What
only the router knows (the embedding's dimension, zero vectors) is checked by the router's core.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr, model_validator

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "BatchRequest",
    "BatchResponse",
    "BoundsInfo",
    "BudgetInfo",
    "Confidence",
    "ModelPrediction",
    "PolicyInfo",
    "RouteRequest",
    "RouteResponse",
]

MAX_PROMPT_CHARS = 200_000
MAX_IMAGES = 16


class RouteRequest(BaseModel):
    """One query: a prompt or its embedding, and how to trade cost for quality."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    prompt: StrictStr | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="Prompt text (needs the router's embedder)."
    )
    embedding: list[StrictFloat] | None = Field(
        None, description="Prompt embedding (d floats, the router's embedder)."
    )
    lambda_: StrictFloat | None = Field(
        None, alias="lambda", ge=0,
        description="Cost weight: score ([0, 1]) per USD, >= 0 (0: best predicted score whatever the cost). "
        "Default: the router's default.",
    )
    max_cost: StrictFloat | None = Field(
        None, ge=0, description="Budget: mean USD per query; lambda from the held-out budget table."
    )
    quality_floor: StrictFloat | None = Field(
        None, gt=0, le=1, description="Certified policy: the cheapest lambda whose mean quality is at least this "
        "share of the best single model's, with probability >= 1 - delta over the calibration prompts.")
    max_mean_cost: StrictFloat | None = Field(
        None, ge=0, description="Certified policy: the best lambda whose mean cost (USD per query) is at most "
        "this, with probability >= 1 - delta.")
    strong_share: StrictFloat | None = Field(
        None, ge=0, le=1, description="RouteLLM's dial: at most this share of calibration prompts to the most "
        "expensive model (no bound).")
    image: StrictStr | None = Field(
        None,
        description="An image sent with the prompt: base64 or a data:image/...;base64, URL (a file path "
        "under the service's image_dir when it has one). Needs a router with a multimodal embedder.",
    )
    images: list[StrictStr] | None = Field(
        None, max_length=MAX_IMAGES, description="Several images with the prompt (as 'image'); averaged."
    )

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.prompt is None) == (self.embedding is None):
            raise ValueError("give exactly one of 'prompt' or 'embedding'")
        if self.prompt is None and (self.image is not None or self.images):
            raise ValueError("'image'/'images' go with a 'prompt' (an embedding already includes them)")
        chosen = [k for k in ("lambda_", "max_cost", "quality_floor", "max_mean_cost", "strong_share")
                  if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError("give at most one of 'lambda', 'max_cost', 'quality_floor', 'max_mean_cost', "
                             "'strong_share'")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RouteRequest] = Field(..., min_length=1, description="Up to max_batch route requests.")


class ModelPrediction(BaseModel):
    score: float = Field(description="Predicted score on [0, 1].")
    cost: float = Field(description="Predicted cost, USD per query.")
    score_bounds: list[float] | None = Field(
        None, description="[lower, upper]: covers this request's realised score with the stated probability "
        "(bounds.level; docs/guarantees.md). Null: no bound for this model (sparse or far neighbourhood). Absent: "
        "the router has no calibrated bounds.")
    cost_bounds: list[float] | None = Field(None, description="[lower, upper] for the realised cost (USD), as "
                                            "score_bounds.")


class BoundsInfo(BaseModel):
    level: float = Field(description="Stated coverage of each model's score_bounds and cost_bounds.")
    status: str = Field(description="'ok'; 'far' (farther from the labelled prompts than any calibration prompt: "
                        "no bounds) or 'sparse' (too few neighbours observed the routed model): the fallback model "
                        "is used when the router has one.")


class Confidence(BaseModel):
    kth_similarity: float = Field(
        description="Cosine similarity of the k-th neighbour (low: far from support)."
    )
    agreement: float = Field(description="Share of neighbours whose own best model is the routed one.")


class PolicyInfo(BaseModel):
    policy: str = Field(description="quality_floor, max_mean_cost or strong_share")
    value: float
    lam: float | None = Field(description="The certified lambda (null: every request to 'model').")
    model: str | None
    certified: bool
    expected_score: float = Field(description="Calibration mean quality at this point.")
    expected_cost: float = Field(description="Calibration mean cost (USD) at this point.")
    bound: float | None = Field(description="The floor certified (rounded up to the table's grid) or the upper "
                                "bound on the mean cost.")
    delta: float
    n: int = Field(description="Calibration prompts.")


class BudgetInfo(BaseModel):
    max_cost: float
    expected_cost: float = Field(description="Held-out mean cost per query at this lambda.")
    expected_score: float = Field(description="Held-out mean score ([0, 1]) at this lambda.")
    feasible: bool = Field(description="False when no lambda meets the budget (the cheapest point is used).")


class RouteResponse(BaseModel):
    model: str = Field(description="The chosen model's name (the fallback model when fallback is set).")
    routed_model: str = Field(description="The router's own choice before the fallback policy.")
    fallback: str | None = Field(
        description="Why the fallback model was used ('distance', 'agreement', or the bounds status "
        "'far'/'sparse'), or null."
    )
    lambda_: float = Field(alias="lambda", serialization_alias="lambda")
    predicted: dict[str, ModelPrediction]
    confidence: Confidence
    budget: BudgetInfo | None = None
    policy: PolicyInfo | None = None
    bounds: BoundsInfo | None = None


class BatchResponse(BaseModel):
    results: list[RouteResponse]
