"""Prepare and embed: from a ``--data`` spec to datasets that carry prompt embeddings.

The one step ``knnroute eval`` and ``knnroute fit`` share (``knnroute route-batch`` shares the spec
parser, :func:`knnroute.data.spec.resolve_spec`, and embeds with the router file's own embedder):

1. :func:`~knnroute.data.spec.resolve_spec` parses the spec (``demo``, ``all``, names, paths, comma lists);
2. with ``pooled=True`` the datasets become one (:func:`~knnroute.data.spec.pool`: one router is fitted on
   it, so it is embedded as one, with one prefix stripper);
3. every dataset without embeddings is embedded (:func:`embed_datasets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from knnroute.data.dataset import RoutingDataset

__all__ = ["embed_datasets", "prepare_data"]


def embed_datasets(
    datasets: Sequence[RoutingDataset], embedder: Any = "minilm", *, progress: bool = True
) -> list[RoutingDataset]:
    """Each dataset with prompt embeddings: as it is if it has some, else embedded (``embed_dataset``).

    Embedding is per dataset (prefix stripping is fitted on that dataset's prompts, per group) and cached.
    """
    from knnroute.embed import embed_dataset

    return [
        ds if ds.embeddings is not None else embed_dataset(ds, embedder=embedder, progress=progress)
        for ds in datasets
    ]


def prepare_data(
    spec: str,
    embedder: Any = "minilm",
    *,
    seed: int = 0,
    pooled: bool = False,
    progress: bool = True,
    prices: Any = None,
) -> list[RoutingDataset]:
    """The datasets of ``spec``, embedded; with ``pooled`` one dataset (named ``spec``) with a split.

    Parameters
    ----------
    spec : str
        A data spec (:mod:`knnroute.data.spec`).
    embedder : spec or object
        For datasets without embeddings (anything :func:`~knnroute.embed.get_embedder` takes).
    seed : int
        Passed to the loaders; with ``pooled``, also seeds the 70/10/20 split of data without one.
    pooled : bool
        Stack the datasets into one (they must share one model pool: ``ValueError`` otherwise).
    progress : bool
        Progress bars while embedding.
    prices : path, optional
        Price table for the spec's long-format files with token counts (``--prices``; see
        :func:`~knnroute.data.spec.resolve_spec`).
    """
    from knnroute.data.spec import pool, resolve_spec

    datasets = resolve_spec(spec, seed=seed, prices=prices)
    if pooled:
        datasets = [pool(datasets, name=spec, seed=seed)]
    return embed_datasets(datasets, embedder, progress=progress)
