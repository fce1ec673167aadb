"""Neighbour search for the routers that need lists of neighbours (tuned kNN, graph/attention, kNN vote).

Every search runs in :class:`knnroute_core.SupportSet` (exact cosine top-k; ties: higher similarity first,
then lower index). :func:`drop_self` is the one leave-one-out step: a training prompt's own row never
counts among its neighbours.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

import knnroute_core

__all__ = ["drop_self", "loo_search", "neighbours", "normalise_rows", "search"]


def search(support: ArrayLike, queries: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact cosine top-``k`` of ``queries`` (B, d) among the ``support`` rows (N, d), on the core.

    Returns ``(idx int64 (B, k), sim float32 (B, k))``, nearest first.
    """
    xs = np.ascontiguousarray(support, dtype=np.float32)
    xq = np.ascontiguousarray(queries, dtype=np.float32)
    idx, sim = knnroute_core.SupportSet(xs).search(xq, int(k))
    return np.asarray(idx, dtype=np.int64), np.asarray(sim, dtype=np.float32)


def drop_self(
    idx: NDArray[np.int64], sim: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Leave-one-out: from the ``k + 1`` neighbours of every support row i (queried against its own support
    set), drop row i's own entry, or the last column when an exact duplicate pushed row i out of its list.

    Column order (nearest first) is kept; returns ``(n, k)`` arrays.
    """
    n, kk = idx.shape
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk - 1)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, kk - 1), sim[keep].reshape(n, kk - 1)


def loo_search(X: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Leave-one-out top-``k`` of every row of ``X`` among the other rows (needs ``1 <= k < len(X)``)."""
    n = np.shape(X)[0]
    if not 1 <= k < n:
        raise ValueError(f"leave-one-out needs 1 <= k < n, got k={k}, n={n}")
    return drop_self(*search(X, X, k + 1))


def normalise_rows(A: ArrayLike) -> NDArray[np.float32]:
    """Rows scaled to unit length, float32; a zero row raises ``ValueError``."""
    A = np.asarray(A, dtype=np.float32)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("zero embedding vector: cosine similarity is undefined")
    return np.ascontiguousarray(A / norms)


def neighbours(
    base: ArrayLike, queries: ArrayLike, k: int, exclude_self: bool = False
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact cosine top-k of ``queries`` (B, d) in ``base`` (N, d), rows normalised here first.

    Parameters
    ----------
    base : ndarray (N, d)
        Support embeddings.
    queries : ndarray (B, d)
        Query embeddings. With ``exclude_self=True`` they must be the support rows themselves
        (``B == N``, row i of ``queries`` is row i of ``base``).
    k : int
        Neighbours per query; ``1 <= k <= N`` (``<= N - 1`` with ``exclude_self``).
    exclude_self : bool
        Leave-one-out (:func:`drop_self`). Used on the training prompts, whose own outcomes must not be
        among their inputs (a model would learn to copy them).

    Returns
    -------
    idx : ndarray of int64, shape (B, k)
    sim : ndarray of float32, shape (B, k)
        Sorted by similarity descending, ties by lower index.
    """
    base_n = normalise_rows(base)
    q_n = normalise_rows(queries)
    N, B = base_n.shape[0], q_n.shape[0]
    if exclude_self and B != N:
        raise ValueError("exclude_self=True needs queries to be the support rows themselves")
    limit = N - 1 if exclude_self else N
    if not 1 <= k <= limit:
        raise ValueError(f"k must be in [1, {limit}] for a support set of {N} prompts, got {k}")
    if exclude_self:
        return drop_self(*search(base_n, q_n, k + 1))
    return search(base_n, q_n, k)
