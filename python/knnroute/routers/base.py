"""What every router shares: the Router protocol, parameter handling, input validation, seeding, routing.

The Router protocol (``docs/internals.md``): ``fit(X, scores, costs, model_names=None, X_val=None,
scores_val=None, costs_val=None)`` returns ``self``; ``predict(X) -> (s_hat, c_hat)`` (n, M) each;
``route(X, lam)`` returns the routed model per prompt, ``(n,)`` for a scalar ``lam`` and ``(n, L)`` for a
1-D one. Selection routers (``selection = True``) have ``fit`` and ``route`` only.

Every routing decision, whatever the router, is the core's ``argmax_m s_hat - lam * c_hat`` (ties: the
cheaper model, then the lower index): :func:`route_predictions` here, or :class:`~knnroute.routers.knn.
KNNRouter`'s fused core calls.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

import knnroute_core

__all__ = [
    "NotFittedError",
    "ParamsMixin",
    "Router",
    "UtilityRouterMixin",
    "as_features",
    "as_queries",
    "check_is_fitted",
    "check_outcomes",
    "lam_array",
    "raise_not_fitted",
    "resolve_model_names",
    "route_predictions",
    "seed_from",
    "validate_fit",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a router is used before ``fit`` (a ValueError, like scikit-learn's)."""


@runtime_checkable
class Router(Protocol):
    """The Router protocol: ``fit`` then ``route`` (utility routers also ``predict``)."""

    def fit(self, X: Any, scores: Any, costs: Any, model_names: Sequence[str] | None = None,
            X_val: Any = None, scores_val: Any = None, costs_val: Any = None) -> Any: ...

    def route(self, X: Any, lam: Any) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------
# parameters and fitted state
# --------------------------------------------------------------------------------------------------


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` in the scikit-learn style, without importing sklearn."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters as a dict (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> ParamsMixin:
        """Set constructor parameters; returns ``self``. Unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        parts = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = bool(value == default)
            except (TypeError, ValueError):  # arrays and other exotic values: always show
                same = False
            if not same:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def raise_not_fitted(obj: object) -> None:
    """Raise :class:`NotFittedError` for ``obj`` with the message every router uses."""
    raise NotFittedError(
        f"This {type(obj).__name__} instance is not fitted yet: call fit(X, scores, costs) "
        "before predict() or route()."
    )


def check_is_fitted(obj: object) -> None:
    """Raise :class:`NotFittedError` unless ``obj`` has been fitted (it has ``n_features_in_``)."""
    if not hasattr(obj, "n_features_in_"):
        raise_not_fitted(obj)


def seed_from(random_state: int | np.random.Generator | np.random.RandomState | None) -> int:
    """A 32-bit seed from ``random_state`` (None draws fresh OS entropy: fits are then not repeatable)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral):
        return int(random_state) % (2**32)
    raise ValueError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


# --------------------------------------------------------------------------------------------------
# input validation: the kNN router's float32 checks (as the core stores them) ...
# --------------------------------------------------------------------------------------------------


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
        raise ValueError(
            f"costs[{r}, {m}] = {C32[r, m]} is negative; costs are USD per query and must be >= 0"
        )
    return S32, C32


def resolve_model_names(model_names: Sequence[str] | None, M: int) -> list[str]:
    """``model_names`` as a list of M unique str (default ``model_0`` ... ``model_{M-1}``)."""
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


# --------------------------------------------------------------------------------------------------
# ... and the learned routers' float64 checks
# --------------------------------------------------------------------------------------------------


def as_features(X: Any, name: str, n_features: int | None = None, dtype: Any = np.float64) -> np.ndarray:
    """``X`` as a C-contiguous 2-D array of ``dtype``; finite, with ``n_features`` columns when given."""
    arr = np.asarray(X, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_prompts, n_features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; embeddings must be finite")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features but the router was fitted with {n_features}")
    return np.ascontiguousarray(arr)


def _as_table(a: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (n_prompts, n_models), got {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name} contains inf; use NaN for missing cells")
    return arr


def validate_fit(
    X: Any,
    scores: Any,
    costs: Any,
    model_names: Sequence[str] | None,
    X_val: Any,
    scores_val: Any,
    costs_val: Any,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Check and convert the Router-protocol ``fit`` arguments of a learned router.

    Returns ``X (n, d)`` (``dtype``), ``S (n, M)``, ``C (n, M)`` (float64, NaN = missing), the model names,
    and the validation triple or None.
    """
    X = as_features(X, "X", dtype=dtype)
    n, d = X.shape
    S_arr = np.asarray(scores, dtype=np.float64)
    if S_arr.ndim != 2 or S_arr.shape[0] != n or S_arr.shape[1] < 1:
        raise ValueError(f"scores must have shape (n_prompts={n}, n_models>=1), got {S_arr.shape}")
    M = S_arr.shape[1]
    S = _as_table(S_arr, "scores", (n, M))
    C = _as_table(costs, "costs", (n, M))
    if np.any(C < 0):  # NaN compares False
        raise ValueError("costs must be >= 0 (USD per query); use NaN for missing cells")
    if n < 2:
        raise ValueError(f"need at least 2 training prompts, got {n}")
    if model_names is None:
        names = [f"model_{j}" for j in range(M)]
    else:
        names = [str(m) for m in model_names]
        if len(names) != M:
            raise ValueError(f"model_names has {len(names)} entries but scores has {M} columns")
    given = [v is not None for v in (X_val, scores_val, costs_val)]
    if any(given) and not all(given):
        raise ValueError("pass all of X_val, scores_val and costs_val, or none of them")
    val = None
    if all(given):
        Xv = as_features(X_val, "X_val", n_features=d, dtype=dtype)
        Sv = _as_table(scores_val, "scores_val", (Xv.shape[0], M))
        Cv = _as_table(costs_val, "costs_val", (Xv.shape[0], M))
        if np.any(Cv < 0):
            raise ValueError("costs_val must be >= 0; use NaN for missing cells")
        if Xv.shape[0] > 0:
            val = (Xv, Sv, Cv)
    return X, S, C, names, val


# --------------------------------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------------------------------


def route_predictions(s_hat: Any, c_hat: Any, lam: Any) -> np.ndarray:
    """Route on predicted utilities with the core: ``argmax_m s_hat - lam * c_hat``.

    Parameters
    ----------
    s_hat, c_hat : array-like of shape (n, M)
        Predicted scores ([0, 1]) and costs (USD per query); converted to float32, as the core routes.
    lam : float or array-like of shape (L,)
        Cost weight(s) in USD^-1 (score units per dollar), ``>= 0``.

    Returns
    -------
    ndarray of int64, shape (n,) for a scalar ``lam``, (n, L) for a 1-D ``lam``
        Index of the routed model. Ties (exactly equal utility) go to the model with the lower predicted
        cost, then to the lower model index.
    """
    s = np.ascontiguousarray(s_hat, dtype=np.float32)
    c = np.ascontiguousarray(c_hat, dtype=np.float32)
    if s.ndim != 2 or s.shape != c.shape:
        raise ValueError(f"s_hat and c_hat must be 2-D with equal shapes, got {s.shape} and {c.shape}")
    lams, scalar = lam_array(lam)
    if np.any(lams < 0):
        raise ValueError("lam must be finite and >= 0")
    out = np.asarray(knnroute_core.route(s, c, lams), dtype=np.int64)
    return out[:, 0] if scalar else out


class UtilityRouterMixin:
    """``route`` on top of ``predict`` for the utility-prediction routers."""

    selection = False

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError

    def route(self, X: Any, lam: Any) -> np.ndarray:
        """Route each prompt to ``argmax_m s_hat - lam * c_hat``.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Prompt embeddings.
        lam : float or array-like of shape (L,)
            Cost weight(s) in USD^-1 with scores on [0, 1].

        Returns
        -------
        ndarray of int64, shape (n,) for a scalar ``lam``, (n, L) for a 1-D ``lam``
            Model indices; ties go to the cheaper predicted cost, then the lower index.
        """
        s_hat, c_hat = self.predict(X)
        return route_predictions(s_hat, c_hat, lam)
