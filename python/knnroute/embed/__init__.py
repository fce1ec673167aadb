"""Prompt embeddings: embedders, an on-disk cache, and embedding a whole :class:`RoutingDataset`.

>>> from knnroute.data import load_dataset
>>> from knnroute.embed import embed_dataset
>>> ds = embed_dataset(load_dataset("routerbench")[0])          # doctest: +SKIP
>>> ds.embeddings.shape, ds.meta["embedder"]                   # doctest: +SKIP

Importing this package is cheap: the model (torch, sentence-transformers) loads on the first encode that
misses the cache.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from knnroute.embed.cache import EmbeddingCache, default_cache_dir, text_key, unique_keys
from knnroute.embed.encoders import (
    DEFAULT_EMBEDDER,
    EMBEDDERS,
    PROGRESS_MIN_ITEMS,
    CallableEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
    get_embedder,
    minilm_path,
    register_embedder,
)
from knnroute.embed.image import (  # registers "efficientnet-lite0"
    EfficientNetLite0Embedder,
    ImageRef,
    embed_images,
)
from knnroute.embed.multimodal import MultimodalEmbedder, MultimodalInput, embed_blocks, fuse  # "multimodal"
from knnroute.embed.onnxrt import OnnxEmbedder, export_minilm_onnx  # registers "minilm-onnx", "minilm-onnx-fp32"
from knnroute.embed.prompt import PromptEncoder
from knnroute.embed.static import WordLlamaEmbedder  # registers "wordllama"

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "CallableEmbedder",
    "EfficientNetLite0Embedder",
    "Embedder",
    "EmbeddingCache",
    "ImageRef",
    "MultimodalEmbedder",
    "MultimodalInput",
    "OnnxEmbedder",
    "PromptEncoder",
    "SentenceTransformerEmbedder",
    "WordLlamaEmbedder",
    "default_cache_dir",
    "embed_blocks",
    "embed_dataset",
    "embed_images",
    "embed_texts",
    "export_minilm_onnx",
    "fuse",
    "get_embedder",
    "minilm_path",
    "register_embedder",
    "text_key",
]

log = logging.getLogger("knnroute.embed")

# New vectors are written to the cache at least this often (rows), so an interrupted long encode keeps
# what it has done.
FLUSH_ROWS = 4096


def embed_texts(
    texts: Sequence[str],
    embedder: Any = DEFAULT_EMBEDDER,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    batch_size: int = 64,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """Embed texts, reusing and filling the on-disk cache.

    Parameters
    ----------
    texts : sequence of str
        Exactly the strings to embed (the cache key is the SHA-256 of each string).
    embedder : spec
        Anything :func:`get_embedder` accepts (default ``"minilm"``).
    cache : bool
        Read and write the cache (ignored for embedders that are not ``cacheable``).
    cache_dir : path, optional
        Cache root (default ``$KNNROUTE_CACHE`` or ``~/.cache/knnroute/embeddings``).
    progress : bool
        Show a progress bar (moving every ``PROGRESS_STEP`` texts at most, with rate and time left; only
        when stderr is a terminal) for encodes of ``PROGRESS_MIN_ITEMS`` or more texts.
    batch_size : int
        Model batch size.
    stats : dict, optional
        Filled with ``n``, ``n_unique``, ``n_cached``, ``n_encoded``, ``seconds``, ``identity``.

    Returns
    -------
    (n, d) float32 with unit-norm rows, in the order of ``texts``. Duplicate texts are encoded once.
    """
    t0 = time.perf_counter()
    emb = get_embedder(embedder)
    texts = list(texts)
    # unique texts (by key), the first position of each, and each text's unique slot
    ukeys, uidx, inverse = unique_keys([text_key(t) for t in texts])

    use_cache = cache and emb.cacheable
    store = EmbeddingCache(emb.identity, cache_dir) if use_cache else None
    uvecs: np.ndarray | None = None
    found = np.zeros(len(ukeys), dtype=bool)
    if store is not None:
        found, cached = store.get(ukeys)
        if cached is not None:
            uvecs = np.empty((len(ukeys), cached.shape[1]), dtype=np.float32)
            uvecs[found] = cached
    miss = np.flatnonzero(~found)
    if miss.size:
        log.info("embedding %d texts with %s (%d cached)", miss.size, emb.identity, int(found.sum()))
        bar = emb.progress_bar(int(miss.size)) if progress and miss.size >= PROGRESS_MIN_ITEMS else None
        try:
            if bar is not None:  # loading the model takes seconds: say so instead of sitting at 0%
                bar.set_description_str(f"embed [{emb.short_name}] (loading the model)")
                _ = emb.dim
                bar.set_description_str(f"embed [{emb.short_name}]")
            for start in range(0, miss.size, FLUSH_ROWS):
                part = miss[start : start + FLUSH_ROWS]
                vecs = emb.encode(
                    [texts[uidx[i]] for i in part], batch_size=batch_size, progress=bar or False
                )
                if uvecs is None:
                    uvecs = np.empty((len(ukeys), vecs.shape[1]), dtype=np.float32)
                uvecs[part] = vecs
                if store is not None:
                    store.put([ukeys[i] for i in part], vecs)
        finally:
            if bar is not None:
                bar.close()
    if uvecs is None:  # no texts at all
        return np.zeros((0, emb.dim), dtype=np.float32)
    out = np.ascontiguousarray(uvecs[inverse])
    if stats is not None:
        stats.update(
            n=len(texts),
            n_unique=len(ukeys),
            n_cached=int(found.sum()),
            n_encoded=int(miss.size),
            seconds=time.perf_counter() - t0,
            identity=emb.identity,
            cache_dir=str(store.dir) if store is not None else None,
        )
    return out


def embed_dataset(
    ds: Any,
    embedder: Any = DEFAULT_EMBEDDER,
    strip_prefix: Any = True,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> Any:
    """A copy of ``ds`` (a :class:`~knnroute.data.RoutingDataset`) carrying prompt embeddings.

    Parameters
    ----------
    ds : RoutingDataset
        Needs ``prompts`` unless ``embedder`` is a precomputed (n, d) array.
    embedder : spec or array
        Anything :func:`get_embedder` accepts, or a precomputed (n, d) array (used as is, normalised).
    strip_prefix : bool or PrefixStripper
        Embed each prompt minus the prefix shared by the dataset's prompts (per group), cut at a blank
        line (see :mod:`knnroute.data.hygiene`); pass an unfitted ``PrefixStripper(...)`` to change its
        thresholds. The raw prompts stay in ``ds.prompts``.
    cache, cache_dir, progress, batch_size
        As in :func:`embed_texts`.

    Returns
    -------
    RoutingDataset with ``embeddings`` (n, d) float32 unit rows, and in ``meta``: ``embedder`` (identity),
    ``prefix_stripper`` (state to strip new prompts the same way), ``prefix_stripped`` (description),
    ``embed_stats`` (counts and seconds).
    """
    from knnroute.data.hygiene import PrefixStripper

    if isinstance(embedder, np.ndarray):
        if embedder.shape[0] != ds.n:
            raise ValueError(f"precomputed embeddings have {embedder.shape[0]} rows for {ds.n} prompts")
        return ds.with_embeddings(embedder, embedder_identity="precomputed", embedder="precomputed")
    if ds.prompts is None:
        raise ValueError(
            f"dataset {ds.name!r} has no prompt texts to embed: pass precomputed embeddings "
            "(embed_dataset(ds, embedder=X) or ds.with_embeddings(X))"
        )
    texts = list(ds.prompts)
    stripper = strip_prefix if isinstance(strip_prefix, PrefixStripper) else PrefixStripper()
    if strip_prefix is not False:
        texts = stripper.fit_transform(texts, None if ds.groups is None else list(ds.groups))
        if stripper.prefixes_:
            log.info("%s: embedding %s", ds.name, stripper.describe())
    else:
        stripper.fit([], None)
    stats: dict[str, Any] = {}
    X = embed_texts(
        texts,
        embedder,
        cache=cache,
        cache_dir=cache_dir,
        progress=progress,
        batch_size=batch_size,
        stats=stats,
    )
    return ds.with_embeddings(
        X,
        embedder=stats["identity"],
        prefix_stripper=stripper.to_dict(),
        prefix_stripped=(
            stripper.describe() if strip_prefix is not False else "raw prompts (prefix stripping off)"
        ),
        embed_stats=stats,
    )
