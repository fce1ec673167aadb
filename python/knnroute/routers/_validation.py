"""Input checks shared by every router: clear errors, one conversion to the core's dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """Raised when a router is used before ``fit`` (a ValueError, like scikit-learn's)."""


def as_queries(X: Any, name: str = "X", dim: int | None = None) -> np.ndarray:
    """Return X as C-contiguous float32 (n, d); a 1-D vector becomes one row.

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for wrong shapes, a dimension
    mismatch, NaN/inf, or zero rows (cosine similarity is undefined for them).
    """
    try:
        A = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be array-like of numbers: {exc}") from exc
    if A.dtype == object or not (np.issubdtype(A.dtype, np.number) or A.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {A.dtype}")
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {A.shape}")
    if dim is not None and A.shape[1] != dim:
        raise ValueError(
            f"{name} has dimension {A.shape[1]} but the router was fitted on dimension {dim}; "
            "embed queries with the same model as the support set"
        )
    A = np.ascontiguousarray(A, dtype=np.float32)
    if A.size and not np.isfinite(A).all():
        bad = int(np.argwhere(~np.isfinite(A))[0, 0])
        raise ValueError(f"{name} row {bad} has a NaN or infinite value")
    if A.shape[0] and A.shape[1]:
        zero = ~A.any(axis=1)
        if zero.any():
            raise ValueError(
                f"{name} row {int(np.argmax(zero))} is a zero vector, which has no cosine similarity"
            )
    return A


def check_outcomes(scores: Any, costs: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate (n, M) score and cost tables; return float32 C-contiguous copies (NaN = missing)."""
    S = np.asarray(scores)
    C = np.asarray(costs)
    for arr, nm in ((S, "scores"), (C, "costs")):
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{nm} must be numeric (float, NaN for missing), got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{nm} must be 2-D (n_prompts, n_models), got shape {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{nm} has {arr.shape[0]} rows but X has {n}: one row per prompt")
    if S.shape != C.shape:
        raise ValueError(f"scores {S.shape} and costs {C.shape} must have the same shape (n, M)")
    if S.shape[1] == 0:
        raise ValueError("scores/costs have no model columns")
    S32 = np.ascontiguousarray(S, dtype=np.float32)
    C32 = np.ascontiguousarray(C, dtype=np.float32)
    if np.isinf(S32).any():
        raise ValueError("scores hold an infinite value; use NaN for a missing outcome")
    if np.isinf(C32).any():
        raise ValueError("costs hold an infinite value; use NaN for a missing outcome")
    neg = C32 < 0
    if neg.any():
        r, m = np.argwhere(neg)[0]
        raise ValueError(f"costs[{r}, {m}] = {C32[r, m]} is negative; costs are USD per query and must be >= 0")
    return S32, C32


def resolve_model_names(model_names: Sequence[str] | None, M: int) -> list[str]:
    if model_names is None:
        return [f"model_{i}" for i in range(M)]
    names = [str(m) for m in model_names]
    if len(names) != M:
        raise ValueError(f"model_names has {len(names)} entries but scores have {M} columns")
    if len(set(names)) != M:
        raise ValueError("model_names must be unique")
    return names


def lam_array(lam: Any) -> tuple[np.ndarray, bool]:
    """(float64 1-D array, was_scalar) from a scalar or a 1-D sequence of finite lambdas."""
    arr = np.asarray(lam, dtype=np.float64)
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise ValueError(f"lam must be a scalar or 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("lam must be finite")
    return np.ascontiguousarray(arr), scalar


def route_from_predictions(s_hat: np.ndarray, c_hat: np.ndarray, lam: Any) -> np.ndarray:
    """Route from predictions with the core's tie rule; (n,) for a scalar lam, else (n, L)."""
    import knnroute_core

    lams, scalar = lam_array(lam)
    out = knnroute_core.route(
        np.ascontiguousarray(s_hat, dtype=np.float32), np.ascontiguousarray(c_hat, dtype=np.float32), lams
    )
    return out[:, 0] if scalar else out
