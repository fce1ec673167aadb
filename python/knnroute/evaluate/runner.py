"""The evaluation grid: datasets x routers x seeds -> a flat list of records.

Each (dataset, router, seed) cell is computed by one pure function, :func:`run_one`, from an
:class:`EvalData` (plain arrays, picklable) and plain arguments (:mod:`knnroute.evaluate.cell`; the
multimodal views ``<router>@text|image|fused``: :mod:`knnroute.evaluate.views`). Nothing else is
shared between cells, so the grid can be fanned out (Ray, processes) with results identical to the serial
loop in :func:`evaluate`. The record fields are described in :mod:`knnroute.evaluate.cell`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from knnroute.evaluate import references as _refs
from knnroute.evaluate.cell import (
    DEFAULT_ROUTERS,
    DEFAULT_SEEDS,
    KNN_ROUTERS,
    REFERENCE_ROUTERS,
    SELECTION_GRID,
    EvalData,
    RunOutput,
    Split,
    available_routers,
    input_cost_kwargs,
    resolve_routers,
    run_cell,
    split_indices,
)
from knnroute.evaluate.views import run_view
from knnroute.routers.curves import Curve
from knnroute.routers.tuned import KNNConfig

__all__ = [
    "DEFAULT_ROUTERS",
    "DEFAULT_SEEDS",
    "KNN_ROUTERS",
    "REFERENCE_ROUTERS",
    "SELECTION_GRID",
    "EvalData",
    "EvalResult",
    "RunOutput",
    "Split",
    "available_routers",
    "evaluate",
    "input_cost_kwargs",
    "resolve_routers",
    "run_one",
    "split_indices",
]


def run_one(
    data: EvalData,
    router: str,
    seed: int,
    *,
    lams: Sequence[float] | None = None,
    n_random: int = _refs.N_RANDOM,
    tuning_grid: Sequence[KNNConfig] | None = None,
    split: Split | None = None,
) -> RunOutput:
    """Evaluate one router on one dataset under one split seed. Pure: same inputs, same outputs.

    ``router``: a name :func:`~knnroute.evaluate.cell.run_cell` takes (reference rows, kNN rows,
    baselines), or ``<router>@text|image|fused`` on a multimodal dataset
    (:func:`~knnroute.evaluate.views.run_view`); the other arguments as ``run_cell``.
    """
    if "@" in router:  # a view of a multimodal dataset: text, image or fused (knnroute.evaluate.views)
        return run_view(data, router, seed, lams=lams, n_random=n_random, tuning_grid=tuning_grid)
    return run_cell(data, router, seed, lams=lams, n_random=n_random, tuning_grid=tuning_grid, split=split)


@dataclass
class EvalResult:
    """All records, the curves of the plotted seed, and per-cell extras (tuning tables)."""

    records: list[dict[str, Any]]
    curves: dict[tuple[str, str, int], Curve]
    extras: dict[tuple[str, str, int], dict[str, Any]]
    datasets: list[EvalData]


def evaluate(
    datasets: Iterable[EvalData],
    routers: Sequence[str] = DEFAULT_ROUTERS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    lams: Sequence[float] | None = None,
    n_random: int = _refs.N_RANDOM,
    progress: bool = True,
    runner: Callable[..., RunOutput] = run_one,
) -> EvalResult:
    """Run the whole grid serially (``runner`` is :func:`run_one`; a fan-out can substitute its own)."""
    data = list(datasets)
    cells = [(d, r, s) for d in data for s in seeds for r in routers]
    records: list[dict[str, Any]] = []
    curves: dict[tuple[str, str, int], Curve] = {}
    extras: dict[tuple[str, str, int], dict[str, Any]] = {}
    from knnroute._progress import bar as _bar

    bar = _bar(len(cells), "fit + evaluate", unit="run", enabled=progress, leave=True)
    try:
        for d, r, s in cells:
            if bar is not None:
                bar.set_postfix_str(f"{d.name} {r} seed={s}", refresh=False)
            out = runner(d, r, s, lams=lams, n_random=n_random)
            if bar is not None:
                bar.update(1)
            records.extend(out.records)
            for name, cv in out.curves.items():
                curves[(d.name, name, s)] = cv
            if out.extra:
                extras[(d.name, r, s)] = out.extra
    finally:
        if bar is not None:
            bar.close()
    return EvalResult(records=records, curves=curves, extras=extras, datasets=data)
