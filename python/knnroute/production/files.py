"""Router files <-> :class:`~knnroute.production.router.ProductionRouter`: ``save``, ``load``, ``loads``.

The format itself (layout, checks, atomic writes) is :mod:`knnroute.production.persist`, which reads and
writes plain state; this module converts that state to and from a router.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.production.persist import read_state, read_state_bytes
from knnroute.production.router import ProductionRouter

__all__ = ["check_values", "from_state", "load", "loads", "save"]


def check_values(meta: Mapping[str, Any], S: np.ndarray, C: np.ndarray) -> None:
    """Refuse impossible values, whether or not the payload digest was checked: a re-signed or
    unverified file must not route with a score of 1e30. Scores on [0, 1] or NaN (missing); costs
    finite and >= 0 or NaN; prices finite and >= 0. (Embeddings: the core refuses non-finite and zero
    rows.) Raises ValueError naming the first bad cell."""
    bad = ~np.isnan(S) & ~((S >= 0.0) & (S <= 1.0))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"score of row {i}, model {j} is {float(S[i, j])!r}: scores must lie in [0, 1] (or NaN)")
    bad = ~np.isnan(C) & ~(np.isfinite(C) & (C >= 0.0))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"cost of row {i}, model {j} is {float(C[i, j])!r}: costs must be finite and >= 0")
    rt = meta.get("row_times")
    if rt is not None:
        n = S.shape[0]
        ok = isinstance(rt, list) and all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], int) and not isinstance(x[0], bool)
            and 0 <= x[0] < n and isinstance(x[1], (int, float)) and not isinstance(x[1], bool)
            and math.isfinite(x[1]) for x in rt)
        if not ok:
            raise ValueError(f"row_times must be a list of [row in [0, {n}), finite time] pairs")
    for m, p in (meta.get("prices") or {}).items():
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             and math.isfinite(v) and v >= 0 for v in p)):
            raise ValueError(f"price of {m!r} is {p!r}: expected [input, output] USD per 1M tokens, finite, >= 0")


def from_state(meta: Mapping[str, Any], X: np.ndarray, S: np.ndarray, C: np.ndarray,
               extra: Mapping[str, np.ndarray] | None = None) -> ProductionRouter:
    """Rebuild a router from validated file metadata and arrays (the core copies the arrays); values
    are checked first (:func:`check_values`). ``extra``: the optional arrays (the lexical hybrid's
    ``lexical_components`` and ``lexical_idf``), rebuilt into the router's
    :class:`~knnroute.embed.lexical.LexicalModel` (copied and validated against the embedder's facts)."""
    from knnroute.embed.prompt import PromptEncoder
    from knnroute.routers.knn import KNNRouter

    check_values(meta, S, C)
    emb_meta = meta.get("embedder")
    embedder: Any = emb_meta
    lex_meta = emb_meta.get("lexical") if isinstance(emb_meta, Mapping) else None
    if lex_meta is not None or extra:
        from knnroute.embed.lexical import lexical_from_file

        if lex_meta is None or not extra or set(extra) != {"lexical_components", "lexical_idf"}:
            raise ValueError("lexical arrays and the embedder's lexical facts go together")
        lexical = lexical_from_file(lex_meta, extra["lexical_components"], extra["lexical_idf"])
        if X.shape[1] <= lexical.dim:
            raise ValueError(f"dim={X.shape[1]} leaves no dense dimensions beside {lexical.dim} lexical ones")
        assert isinstance(emb_meta, Mapping)  # lex_meta came from it
        embedder = PromptEncoder(emb_meta, emb_meta.get("prefix_stripper"), lexical=lexical)

    knn = meta["knn"]
    n = X.shape[0]
    router = KNNRouter(
        k=min(int(knn["k"]), n),  # removals may have left fewer rows than k (core uses min(k, n))
        weighting=knn["weighting"],
        temperature=float(knn["temperature"]),
        shrinkage=float(knn["shrinkage"]),
        precision=knn.get("precision", "f32"),
        half_life=float(knn.get("half_life", 0.0)),
        common_radius=bool(knn.get("common_radius", True)),
    ).fit(X, S, C, model_names=meta["model_names"])
    if meta.get("row_times"):  # feedback rows' times (the fitted rows are time 0)
        times = np.zeros(n)
        for r, t in meta["row_times"]:
            times[r] = t
        router.core_.set_times(times)
    prices = meta.get("prices") or None
    if prices is not None:
        prices = {m: (p[0], p[1]) for m, p in prices.items()}
    return ProductionRouter(
        router,
        ids=meta["ids"],
        prices=prices,
        embedder=embedder,
        budget=meta.get("budget"),
        fallback=meta.get("fallback"),
        default_lambda=float(meta.get("default_lambda", 0.0)),
        meta=meta.get("meta") or {},
    )


def save(
    router: Any,
    path: str | os.PathLike,
    embedder: Any = None,
    prices: Any = None,
    *,
    precision: str = "f32",
    **extra: Any,
) -> Path:
    """Write a fitted router to ``path`` atomically.

    Parameters
    ----------
    router : KNNRouter, TunedKNNRouter or ProductionRouter
        A fitted router. A ProductionRouter carries its own ids, prices, embedder, budget table and
        fallback policy; for a bare ``KNNRouter`` these come from the arguments.
    path : path
        Target file (its folder must exist). Replaced atomically.
    embedder : spec, Embedder or str, optional
        The embedder of the support set (recorded by identity so ``route_prompts`` can embed new text).
    prices : mapping model -> (input, output) USD per 1M tokens, optional
    precision : {"f32", "f16", "bf16"}
        Storage precision of the embeddings section in the file (f16/bf16 halve the file; vectors are
        widened to float32 on load).
    **extra
        Passed to :class:`~knnroute.production.router.ProductionRouter` when wrapping a bare router
        (``ids``, ``budget``, ``fallback``, ``default_lambda``, ``meta``...).

    Returns
    -------
    Path of the written file.
    """
    if isinstance(router, ProductionRouter):
        if embedder is not None or prices is not None or extra:
            raise ValueError("save(ProductionRouter): embedder/prices/extra are taken from the router itself")
        prod = router
    else:
        prod = ProductionRouter(router, embedder=embedder, prices=prices, **extra)
    return prod.save(path, precision=precision)


def _finish(prod: ProductionRouter, load_embedder: bool, embedder: Any) -> ProductionRouter:
    if embedder is not None:
        prod.set_embedder(embedder)  # refuses an embedder other than the recorded one
    elif load_embedder:
        prod.embedder()
    return prod


def load(
    path: str | os.PathLike,
    verify: bool = True,
    *,
    expect_dim: int | None = None,
    load_embedder: bool = False,
    embedder: Any = None,
) -> ProductionRouter:
    """Load a router file into a :class:`~knnroute.production.router.ProductionRouter`.

    Parameters
    ----------
    path : path
    verify : bool, default True
        Check the payload's SHA-256 (one pass over the file's arrays). Structural checks (sizes, offsets,
        shapes, header digest) always run; the core also rejects non-finite or zero embeddings.
    expect_dim : int, optional
        Refuse a file whose embedding dimension differs (e.g. the dimension of the embedder you serve).
    load_embedder : bool
        Build the recorded embedder now (loads torch for MiniLM) instead of on first ``route_prompts``.
    embedder : spec or Embedder, optional
        Use this embedder for prompts (e.g. ``"wordllama"``); refused with a ``ValueError`` ("embedder
        mismatch") unless its identity equals the one recorded in the file.

    Raises
    ------
    RouterFileError (a ValueError)
        Truncated, corrupt, wrong version, wrong dimension, unknown precision, inconsistent metadata.
    FileNotFoundError
    """
    prod = read_state(path, from_state, verify, expect_dim=expect_dim)
    return _finish(prod, load_embedder, embedder)


def loads(data: bytes, verify: bool = True, *, expect_dim: int | None = None,
          source: Any = "<bytes>") -> ProductionRouter:
    """Load a router from the bytes of a router file (same checks as :func:`load`; errors name ``source``)."""
    return read_state_bytes(data, from_state, verify, expect_dim=expect_dim, source=source)

