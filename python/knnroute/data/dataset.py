"""The in-memory routing dataset: prompts, outcome tables and the labels that go with them.

A :class:`RoutingDataset` is what every loader returns and what routers and evaluation consume. It holds
``n`` prompts and ``M`` candidate models:

* ``scores`` (n, M) float64 on [0, 1], ``NaN`` where the outcome is missing;
* ``costs`` (n, M) float64, USD per query, ``>= 0``, ``NaN`` where missing;
* ``ids`` (n,) object array of unique str; ``prompts`` (list of str) and ``embeddings`` ((n, d) float32,
  unit rows) are optional; so are ``prices`` (USD per 1M input/output tokens), ``groups`` (task labels) and
  ``split`` ("train"/"val"/"test" per prompt).

The constructor validates shapes, dtypes and ranges and raises ``ValueError`` naming the field, so a
dataset that exists is a dataset that is well formed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLIT_LABELS = ("train", "val", "test")


def _as_object_str_array(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.empty(n, dtype=object)
    vals = list(values)
    if len(vals) != n:
        raise ValueError(f"{what} has {len(vals)} entries, expected one per prompt ({n})")
    for i, v in enumerate(vals):
        arr[i] = v if isinstance(v, str) else str(v)
    return arr


def normalize_rows(x: Any, what: str = "embeddings") -> np.ndarray:
    """Return ``x`` as C-contiguous float32 with unit-norm rows.

    Raises ``ValueError`` for a non-2-D array, a non-finite entry or an all-zero row (naming the row).
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{what} row {bad} has a NaN or infinite entry")
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    if arr.shape[0] and (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"{what} row {bad} is all zeros: it has no direction to compare by cosine")
    return np.ascontiguousarray((arr / norms[:, None]).astype(np.float32))


@dataclass(eq=False)
class RoutingDataset:
    """A routing benchmark: ``n`` prompts, ``M`` models, true score and cost per (prompt, model).

    Parameters
    ----------
    name : str
        Short name (``"arc_challenge"``, ``"llmrouter"``, ``"demo"``...).
    model_names : list of str, length M
        Candidate models, in column order of ``scores`` and ``costs``.
    scores : array-like (n, M)
        True quality on [0, 1] (stored float64); ``NaN`` marks a missing outcome.
    costs : array-like (n, M)
        True cost in USD per query, ``>= 0`` (stored float64); ``NaN`` marks a missing outcome.
    ids : array-like (n,) of str, optional
        Unique prompt ids (stored as an object array of str). Defaults to ``"0" .. "n-1"``.
    prompts : list of str, optional
        The prompt texts as sent to the models (before any prefix stripping; see
        :mod:`knnroute.data.hygiene`).
    embeddings : array-like (n, d), optional
        Prompt embeddings; stored float32 with unit-norm rows (normalised here if needed).
    prices : dict model -> (input, output), optional
        USD per 1M input / output tokens, for the models the loader has prices for.
    groups : array-like (n,), optional
        Task / topic label per prompt (object array).
    split : array-like (n,), optional
        ``"train"``, ``"val"`` or ``"test"`` per prompt (object array), when the data ships a split
        or one has been assigned (see :mod:`knnroute.data.splits`).
    generated : bool
        True only for generated data (the demo benchmark). Every summary of it says so.
    source : str
        Where the data came from (path, file format, or the generator call).
    meta : dict
        Loader-specific facts (cost model, clipped cells, shipped-split details, embedder identity...).
    """

    name: str
    model_names: list[str]
    scores: np.ndarray
    costs: np.ndarray
    ids: Any = None  # (n,) object array of unique str once constructed (__post_init__ fills a default)
    prompts: list[str] | None = None
    embeddings: np.ndarray | None = None
    prices: dict[str, tuple[float, float]] | None = None
    groups: np.ndarray | None = None
    split: np.ndarray | None = None
    generated: bool = False
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_names = [str(m) for m in self.model_names]
        m = len(self.model_names)
        if m == 0:
            raise ValueError(f"dataset {self.name!r}: model_names is empty (need at least one model)")
        if len(set(self.model_names)) != m:
            dup = sorted({x for x in self.model_names if self.model_names.count(x) > 1})
            raise ValueError(f"dataset {self.name!r}: duplicate model names {dup}")
        self.scores = np.array(self.scores, dtype=np.float64, copy=True)
        self.costs = np.array(self.costs, dtype=np.float64, copy=True)
        if self.scores.ndim != 2 or self.scores.shape[1] != m:
            raise ValueError(
                f"dataset {self.name!r}: scores must have shape (n, {m}) (one column per model), "
                f"got {self.scores.shape}"
            )
        n = self.scores.shape[0]
        if self.costs.shape != self.scores.shape:
            raise ValueError(
                f"dataset {self.name!r}: costs shape {self.costs.shape} != scores shape {self.scores.shape}"
            )
        for arr, what in ((self.scores, "scores"), (self.costs, "costs")):
            if np.isinf(arr).any():
                i, j = np.argwhere(np.isinf(arr))[0]
                raise ValueError(
                    f"dataset {self.name!r}: {what}[{i}, {j}] (model {self.model_names[j]!r}) is infinite"
                )
        bad = ~np.isnan(self.scores) & ((self.scores < 0.0) | (self.scores > 1.0))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"dataset {self.name!r}: score {self.scores[i, j]!r} at row {i} (model "
                f"{self.model_names[j]!r}) is outside [0, 1]; map the loader's scale to [0, 1] first"
            )
        neg = ~np.isnan(self.costs) & (self.costs < 0.0)
        if neg.any():
            i, j = np.argwhere(neg)[0]
            raise ValueError(
                f"dataset {self.name!r}: cost {self.costs[i, j]!r} at row {i} (model "
                f"{self.model_names[j]!r}) is negative; costs are USD per query >= 0"
            )
        if self.ids is None:
            self.ids = _as_object_str_array(range(n), n, "ids")
        else:
            self.ids = _as_object_str_array(self.ids, n, f"dataset {self.name!r}: ids")
        if len(set(self.ids.tolist())) != n:
            seen: set[str] = set()
            for i, x in enumerate(self.ids):
                if x in seen:
                    raise ValueError(f"dataset {self.name!r}: prompt id {x!r} (row {i}) is not unique")
                seen.add(x)
        if self.prompts is not None:
            self.prompts = [p if isinstance(p, str) else str(p) for p in self.prompts]
            if len(self.prompts) != n:
                raise ValueError(f"dataset {self.name!r}: {len(self.prompts)} prompts for {n} rows")
        if self.embeddings is not None:
            self.embeddings = normalize_rows(self.embeddings, f"dataset {self.name!r}: embeddings")
            if self.embeddings.shape[0] != n:
                raise ValueError(
                    f"dataset {self.name!r}: embeddings have {self.embeddings.shape[0]} rows for {n} prompts"
                )
        if self.groups is not None:
            self.groups = _as_object_str_array(self.groups, n, f"dataset {self.name!r}: groups")
        if self.split is not None:
            self.split = _as_object_str_array(self.split, n, f"dataset {self.name!r}: split")
            unknown = set(self.split.tolist()) - set(SPLIT_LABELS)
            if unknown:
                raise ValueError(
                    f"dataset {self.name!r}: split labels must be in {SPLIT_LABELS}, got {sorted(unknown)}"
                )
        if self.prices is not None:
            prices: dict[str, tuple[float, float]] = {}
            for k, v in self.prices.items():
                pin, pout = (float(v[0]), float(v[1]))
                if not (np.isfinite(pin) and np.isfinite(pout)) or pin < 0 or pout < 0:
                    raise ValueError(
                        f"dataset {self.name!r}: price for {k!r} must be two finite numbers >= 0"
                    )
                prices[str(k)] = (pin, pout)
            self.prices = prices
        self.meta = dict(self.meta)

    # ------------------------------------------------------------------ sizes
    @property
    def n(self) -> int:
        """Number of prompts."""
        return int(self.scores.shape[0])

    @property
    def n_models(self) -> int:
        """Number of candidate models ``M``."""
        return len(self.model_names)

    def __len__(self) -> int:
        return self.n

    def input_costs(self, chars_per_token: float = 4.0) -> np.ndarray | None:
        """The part of each cost a router knows before calling a model: input tokens x input price.

        ``(len(prompt) / chars_per_token) * input_price / 1e6`` USD per (prompt, model), the same token
        estimate the loaders use for their estimated costs; 0 for a model without a price. ``None`` when
        the dataset has no prompt texts or no prices (RouterBench: real costs, no price table).
        """
        if not self.prices or self.prompts is None:
            return None
        chars = np.array([len(p) for p in self.prompts], dtype=np.float64)
        pin = np.array([self.prices.get(m, (0.0, 0.0))[0] for m in self.model_names], dtype=np.float64)
        return (chars[:, None] / float(chars_per_token)) * pin[None, :] / 1e6

    def __repr__(self) -> str:
        tag = ", GENERATED" if self.generated else ""
        emb = "" if self.embeddings is None else f", embeddings={self.embeddings.shape}"
        return f"RoutingDataset({self.name!r}, n={self.n}, M={self.n_models}{emb}{tag})"

    # --------------------------------------------------------------- derived
    def replace(self, **changes: Any) -> RoutingDataset:
        """A copy with some fields replaced (validated again). Arrays not replaced are shared."""
        return dataclasses.replace(self, **changes)

    def subset(self, index: Any) -> RoutingDataset:
        """The dataset restricted to some prompts.

        Parameters
        ----------
        index : bool mask (n,), integer indices, or a slice
            Rows to keep, in the given order. Arrays in ``meta`` whose first dimension is ``n`` are
            indexed too.
        """
        idx = np.arange(self.n)[index] if isinstance(index, slice) else np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (self.n,):
                raise ValueError(f"boolean index has shape {idx.shape}, expected ({self.n},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise ValueError(f"index out of range for a dataset of {self.n} prompts")

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return dataclasses.replace(
            self,
            scores=self.scores[idx],
            costs=self.costs[idx],
            ids=self.ids[idx],
            prompts=None if self.prompts is None else [self.prompts[i] for i in idx],
            embeddings=take(self.embeddings),
            groups=take(self.groups),
            split=take(self.split),
            # per-prompt arrays in meta (token counts, flags) follow the rows
            meta={
                k: v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (self.n,) else v
                for k, v in self.meta.items()
            },
        )

    def with_embeddings(self, embeddings: Any, **meta: Any) -> RoutingDataset:
        """A copy carrying ``embeddings`` ((n, d), normalised to float32 unit rows).

        Keyword arguments are merged into ``meta`` (e.g. ``embedder=<identity>``).
        """
        return dataclasses.replace(self, embeddings=embeddings, meta={**self.meta, **meta})

    def with_split(self, split: Any, **meta: Any) -> RoutingDataset:
        """A copy carrying split labels ("train"/"val"/"test" per prompt)."""
        return dataclasses.replace(self, split=split, meta={**self.meta, **meta})

    def split_index(self, label: str) -> np.ndarray:
        """Indices (int64) of the prompts whose split label is ``label``; raises if there is no split."""
        if self.split is None:
            raise ValueError(
                f"dataset {self.name!r} has no split: use knnroute.data.splits.ensure_split(ds, seed=...)"
            )
        if label not in SPLIT_LABELS:
            raise ValueError(f"split label must be one of {SPLIT_LABELS}, got {label!r}")
        return np.flatnonzero(self.split == label)

    def test_text_in_train(self) -> int:
        """Number of test prompts whose text equals a train or val prompt's (0 without prompts or split)."""
        if self.prompts is None or self.split is None:
            return 0
        seen = {p for p, s in zip(self.prompts, self.split, strict=True) if s != "test"}
        return sum(1 for p, s in zip(self.prompts, self.split, strict=True) if s == "test" and p in seen)

    def missing_counts(self) -> dict[str, int]:
        """Counts of missing cells: score cells, cost cells, and prompts with every score missing."""
        s_nan = np.isnan(self.scores)
        return {
            "score_cells": int(s_nan.sum()),
            "cost_cells": int(np.isnan(self.costs).sum()),
            "prompts_all_scores_missing": int(s_nan.all(axis=1).sum()),
        }

    # ----------------------------------------------------------------- report
    def summary(self, per_model: bool = True) -> str:
        """A human-readable multi-line description: sizes, missing cells, split, per-model means.

        Generated data (the demo benchmark) is labelled as such on the first line.
        """
        lines: list[str] = []
        if self.generated:
            lines.append("GENERATED DATA (built-in demo benchmark; not real model outcomes)")
        lines.append(f"{self.name}: {self.n:,} prompts x {self.n_models} models  [{self.source}]")
        miss = self.missing_counts()
        lines.append(
            f"  missing: {miss['score_cells']:,} score cells, {miss['cost_cells']:,} cost cells "
            f"({miss['prompts_all_scores_missing']:,} prompts with no score at all); kept as NaN"
        )
        if self.split is not None:
            counts = {lab: int((self.split == lab).sum()) for lab in SPLIT_LABELS}
            how = self.meta.get("split_source", "")
            lines.append(
                "  split: "
                + " / ".join(f"{k} {v:,}" for k, v in counts.items())
                + (f"  ({how})" if how else "")
            )
            leak = self.test_text_in_train()
            if leak:
                lines.append(f"  note: {leak:,} test prompts have the same text as a train/val prompt")
        else:
            lines.append("  split: none shipped (use knnroute.data.splits.ensure_split for seeded 70/10/20)")
        if self.groups is not None:
            uniq, cnt = np.unique(self.groups.astype(str), return_counts=True)
            order = np.argsort(-cnt, kind="stable")
            shown = ", ".join(f"{uniq[i]} {cnt[i]:,}" for i in order[:8])
            more = f", ... ({len(uniq)} groups)" if len(uniq) > 8 else ""
            lines.append(f"  groups: {shown}{more}")
        if self.embeddings is not None:
            who = self.meta.get("embedder", "unknown embedder")
            lines.append(f"  embeddings: {self.embeddings.shape} float32 unit rows ({who})")
        stripped = self.meta.get("prefix_stripped")
        if stripped:
            lines.append(f"  embedded text: {stripped}")
        if self.meta.get("cost_model"):
            lines.append(f"  costs: {self.meta['cost_model']}")
        if self.meta.get("score_mapping"):
            lines.append(f"  scores: {self.meta['score_mapping']}")
        for note in self.meta.get("notes", []):
            lines.append(f"  note: {note}")
        if per_model:
            with np.errstate(invalid="ignore"):
                mean_s = np.nanmean(np.where(np.isnan(self.scores).all(axis=0), 0.0, self.scores), axis=0)
                mean_c = np.nanmean(np.where(np.isnan(self.costs).all(axis=0), 0.0, self.costs), axis=0)
            width = max(len(m) for m in self.model_names)
            lines.append(f"  {'model'.ljust(width)}  mean score  mean cost (USD)  price in/out (USD/1M tok)")
            for j, mname in enumerate(self.model_names):
                price = ""
                if self.prices and mname in self.prices:
                    pin, pout = self.prices[mname]
                    price = f"{pin:g} / {pout:g}"
                lines.append(f"  {mname.ljust(width)}  {mean_s[j]:10.4f}  {mean_c[j]:15.6g}  {price}")
        if self.generated:
            lines.append(
                "  (generated data: numbers above describe the synthetic generator, not real models)"
            )
        return "\n".join(lines)


def concat(datasets: Sequence[RoutingDataset], name: str | None = None) -> RoutingDataset:
    """Stack datasets with the same models (same order) into one; groups default to each part's name."""
    if not datasets:
        raise ValueError("concat needs at least one dataset")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.model_names != first.model_names:
            raise ValueError(f"cannot concat {ds.name!r}: its models differ from {first.name!r}'s")

    def cat_opt(attr: str) -> np.ndarray | None:
        parts = [getattr(d, attr) for d in datasets]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts)

    groups = [d.groups if d.groups is not None else np.full(d.n, d.name, dtype=object) for d in datasets]
    prompts = None if any(d.prompts is None for d in datasets) else [p for d in datasets for p in d.prompts]  # type: ignore[union-attr]
    prices: dict[str, tuple[float, float]] | None = None
    if any(d.prices for d in datasets):
        prices = {}
        for d in datasets:
            prices.update(d.prices or {})
    return RoutingDataset(
        name=name or "+".join(d.name for d in datasets),
        model_names=list(first.model_names),
        scores=np.concatenate([d.scores for d in datasets]),
        costs=np.concatenate([d.costs for d in datasets]),
        ids=np.concatenate([d.ids for d in datasets]),
        prompts=prompts,
        embeddings=cat_opt("embeddings"),
        prices=prices,
        groups=np.concatenate(groups),
        split=cat_opt("split"),
        generated=any(d.generated for d in datasets),
        source=" + ".join(d.source for d in datasets),
        meta={"parts": [d.name for d in datasets]},
    )
