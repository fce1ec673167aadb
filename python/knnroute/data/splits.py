"""Train / validation / test splits.

Conventions (``python/knnroute/evaluate/README.md`` § Conventions): a seeded random 70/10/20 split over
prompts unless the data ships its own split. When the data ships only train/test (RouterBench subset,
LLMRouter), the loaders keep the shipped test set untouched and carve a seeded 1/8 of the shipped train
set as validation (:func:`carve_validation`); hyperparameters are tuned on that validation set only.
:func:`cross_task_split` trains on some tasks and tests on others (distribution shift).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from knnroute.data.dataset import SPLIT_LABELS, RoutingDataset

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
SHIPPED_VAL_FRACTION = 1 / 8


def random_split(n: int, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Seeded random split labels for ``n`` prompts.

    Parameters
    ----------
    n : int
        Number of prompts.
    seed : int
        Seed of ``numpy.random.default_rng``; the same ``(n, seed, fractions)`` always gives the same labels.
    fractions : (train, val, test)
        Proportions summing to 1. Sizes are ``round(f_train * n)``, ``round(f_val * n)``, rest test.

    Returns
    -------
    (n,) object array of ``"train"`` / ``"val"`` / ``"test"``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    n_train = round(fractions[0] * n)
    n_val = min(round(fractions[1] * n), n - n_train)
    perm = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=object)
    labels[perm[:n_train]] = "train"
    labels[perm[n_train : n_train + n_val]] = "val"
    labels[perm[n_train + n_val :]] = "test"
    return labels


def carve_validation(
    split: Iterable[str], fraction: float = SHIPPED_VAL_FRACTION, seed: int = 0
) -> np.ndarray:
    """Relabel a seeded ``fraction`` of the ``"train"`` prompts as ``"val"``; ``"test"`` is never touched.

    Used for data that ships a train/test split only. ``round(fraction * n_train)`` prompts move to val.
    """
    labels = np.array([str(s) for s in split], dtype=object)
    unknown = set(labels.tolist()) - set(SPLIT_LABELS)
    if unknown:
        raise ValueError(f"split labels must be in {SPLIT_LABELS}, got {sorted(unknown)}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    train = np.flatnonzero(labels == "train")
    n_val = round(fraction * train.size)
    pick = np.random.default_rng(seed).permutation(train.size)[:n_val]
    labels[train[pick]] = "val"
    return labels


def ensure_split(
    ds: RoutingDataset, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> RoutingDataset:
    """``ds`` unchanged if it carries a split (shipped or assigned), else a copy with a seeded random split.
    """
    if ds.split is not None:
        return ds
    return ds.with_split(
        random_split(ds.n, seed, fractions),
        split_source=f"seeded random {'/'.join(f'{round(f * 100)}' for f in fractions)} (seed={seed})",
    )


def split_dataset(ds: RoutingDataset, seed: int = 0) -> dict[str, RoutingDataset]:
    """``{"train": ..., "val": ..., "test": ...}`` sub-datasets (seeded split drawn if ``ds`` has none)."""
    ds = ensure_split(ds, seed)
    return {lab: ds.subset(ds.split_index(lab)) for lab in SPLIT_LABELS}


def cross_task_split(
    ds: RoutingDataset,
    train_groups: Iterable[Any],
    test_groups: Iterable[Any],
    val_fraction: float = SHIPPED_VAL_FRACTION,
    seed: int = 0,
) -> RoutingDataset:
    """A distribution-shift split: train (and validate) on some tasks, test on others.

    Prompts whose group is in ``train_groups`` become train, with a seeded ``val_fraction`` of them
    relabelled val; prompts whose group is in ``test_groups`` become test; the rest are dropped.

    Returns
    -------
    RoutingDataset with ``split`` set, restricted to the prompts of the named groups.
    """
    if ds.groups is None:
        raise ValueError(f"dataset {ds.name!r} has no group labels: a cross-task split needs them")
    tr = {str(g) for g in train_groups}
    te = {str(g) for g in test_groups}
    if not tr or not te:
        raise ValueError("cross_task_split needs at least one train group and one test group")
    if tr & te:
        raise ValueError(f"groups {sorted(tr & te)} are in both train_groups and test_groups")
    present = set(ds.groups.tolist())
    missing = (tr | te) - present
    if missing:
        raise ValueError(f"groups {sorted(missing)} not in dataset {ds.name!r} (has {sorted(present)})")
    keep = np.flatnonzero(np.isin(ds.groups, list(tr | te)))
    sub = ds.subset(keep)
    labels = np.where(np.isin(sub.groups, list(tr)), "train", "test").astype(object)  # type: ignore[arg-type]
    labels = carve_validation(labels, val_fraction, seed)
    return sub.with_split(
        labels,
        split_source=f"cross-task: train/val on {sorted(tr)}, test on {sorted(te)} (seed={seed})",
    )
