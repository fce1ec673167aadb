"""The evaluation grid, and the cross-task (``--ood``) cells, on a local process pool (``knnroute eval --jobs N``).

:func:`~knnroute.evaluate.runner.run_one` is pure, so the (dataset, router, seed) cells can run in any
order in any process. This module runs them on ``jobs`` worker processes and assembles the results with
:func:`~knnroute.evaluate.runner.evaluate` in the serial order, so records, curves and extras are the ones
the serial loop produces (timings aside; the tests compare them).

Design:

* ``spawn`` workers (never ``fork``: the parent may hold OpenMP/torch thread pools, which do not survive a
  fork), each given every dataset once through the pool initialiser, not once per cell.
* One BLAS/OpenMP thread per worker (``threadpoolctl``) and the core's single-thread path: ``jobs``
  processes on ``jobs`` cores, never ``jobs`` x threads. The learned torch routers already train on one
  thread each.
* Longest cells first (a fixed per-router weight x training-set size), so the last cell to finish is a
  short one and the cores stay busy to the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from knnroute.evaluate import references as _refs
from knnroute.evaluate.runner import EvalData, EvalResult, RunOutput, evaluate, run_one

__all__ = ["cell_weight", "default_jobs", "evaluate_processes", "map_cells"]

# Relative cost of one cell per training prompt, from the fit + evaluation times of the full grid
# (docs/baselines.md, Table 3; knn-tuned-lex: three tunings and the lexical fit, issue 31): only the order matters.
_WEIGHT = {
    "dattn-100": 12.0, "attn-100": 9.0, "logreg": 8.0, "mlp-clf": 6.0, "dattn-10": 6.0, "graph-100": 5.0,
    "attn-10": 3.0, "graph-10": 3.0, "linear-mf": 3.0, "mlp-mf": 3.0, "mlp": 3.0, "knn-tuned-lex": 4.0,
    "knn-tuned": 1.0,
    "linear": 0.5,
}

_DATA: dict[str, EvalData] = {}
_DATA_LIST: list[EvalData] = []


def default_jobs() -> int:
    """The CPUs this process may run on (``sched_getaffinity``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _n_jobs(jobs: int | None) -> int:
    n = default_jobs() if jobs is None else int(jobs)
    if n < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    return n


def _init(data: list[EvalData]) -> None:
    # BLAS libraries loaded later in the worker (SciPy's own OpenBLAS, loaded by the lexical fit) read these
    # when they load; threadpool_limits below only reaches the ones loaded already (NumPy's).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    _DATA.clear()
    _DATA.update({d.name: d for d in data})
    _DATA_LIST[:] = data


CellTask = Callable[..., Any]
"""A module-level function ``task(data_list, *cell, *args)`` run per cell (picklable by reference)."""


def _run(
    kind: str | CellTask, cell: tuple[Any, ...], args: tuple[Any, ...], data: Sequence[EvalData] | None = None
) -> Any:
    """One cell. ``"grid"``: (dataset name, router, seed) -> RunOutput; a callable ``task``:
    ``task(data_list, *cell, *args)`` (e.g. :func:`knnroute.evaluate.ood.ood_cell`). Workers use the data
    given to the pool initialiser; in-process calls pass ``data``."""
    lams, n_random = args
    if kind == "grid":
        name, router, seed = cell
        d = _DATA[name] if data is None else {x.name: x for x in data}[name]
        return run_one(d, router, seed, lams=lams, n_random=n_random)
    if callable(kind):
        return kind(_DATA_LIST if data is None else list(data), *cell, *args)
    raise ValueError(f"unknown cell kind {kind!r}")


def cell_weight(d: EvalData, router: str) -> float:
    """Relative cost of fitting and evaluating ``router`` on ``d`` (schedules the heaviest cells first)."""
    base = router.split("@", 1)[0]
    return _WEIGHT.get(base, 0.05) * d.n * (1.0 + 0.1 * d.n_models)


def map_cells(
    kind: str | CellTask,
    data: Sequence[EvalData],
    cells: Sequence[tuple[Any, ...]],
    *,
    jobs: int | None,
    args: tuple[Any, ...],
    progress: bool = True,
    desc: str = "cells",
    label: Callable[[tuple[Any, ...]], str] | None = None,
    weight: Callable[[tuple[Any, ...]], float] | None = None,
) -> dict[tuple[Any, ...], Any]:
    """Every cell's output, keyed by cell: on ``jobs`` spawn workers (``None``: every CPU), heaviest first,
    or in this process when ``jobs == 1``. A failing cell raises here, naming the cell."""
    n_jobs = _n_jobs(jobs)
    outs: dict[tuple[Any, ...], Any] = {}
    bar = None
    if progress:
        from knnroute._progress import bar as _bar

        suffix = f" ({n_jobs} processes)" if n_jobs > 1 and len(cells) > 1 else ""
        bar = _bar(len(cells), desc + suffix, unit="run", leave=True)
    try:
        if n_jobs == 1 or len(cells) <= 1:
            for c in cells:
                if bar is not None and label is not None:
                    bar.set_postfix_str(label(c), refresh=False)
                outs[c] = _run(kind, c, args, data)
                if bar is not None:
                    bar.update(1)
            return outs
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        order = sorted(cells, key=lambda c: -weight(c)) if weight is not None else list(cells)
        ex = ProcessPoolExecutor(max_workers=min(n_jobs, len(cells)), mp_context=mp.get_context("spawn"),
                                 initializer=_init, initargs=(list(data),))
        try:
            futures = {ex.submit(_run, kind, c, args): c for c in order}
            pending: set[Any] = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    c = futures[f]
                    exc = f.exception()
                    if exc is not None:
                        where = f"evaluation cell {_describe(kind, c, data)}"
                        if isinstance(exc, ValueError):  # bad data or settings: a user error, one line
                            raise ValueError(f"{where}: {exc}") from exc
                        raise RuntimeError(f"{where} failed: {exc!r}") from exc
                    outs[c] = f.result()
                    if bar is not None:
                        if label is not None:
                            bar.set_postfix_str(label(c), refresh=False)
                        bar.update(1)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        return outs
    finally:
        if bar is not None:
            bar.close()


def _describe(kind: str | CellTask, c: tuple[Any, ...], data: Sequence[EvalData]) -> str:
    if kind == "grid":
        return f"dataset={c[0]!r} router={c[1]!r} seed={c[2]}"
    return f"train={data[c[0]].name!r} router={c[2]!r} seed={c[1]}"


def evaluate_processes(
    datasets: Iterable[EvalData],
    routers: Sequence[str],
    seeds: Sequence[int],
    *,
    jobs: int | None = None,
    lams: Sequence[float] | None = None,
    n_random: int = _refs.N_RANDOM,
    progress: bool = True,
) -> EvalResult:
    """The grid of :func:`~knnroute.evaluate.runner.evaluate` on ``jobs`` processes (default: every CPU).

    ``jobs=1`` (or a single cell) runs the serial loop in this process. A failing cell raises its
    exception here, naming the cell, after the pending cells are cancelled.
    """
    data = list(datasets)
    names = [d.name for d in data]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    n_jobs = _n_jobs(jobs)
    cells = [(d.name, r, s) for d in data for s in seeds for r in routers]
    if n_jobs == 1 or len(cells) <= 1:
        return evaluate(data, routers, seeds, lams=lams, n_random=n_random, progress=progress)
    by_name = {d.name: d for d in data}
    lam_list = None if lams is None else [float(x) for x in lams]
    outs = map_cells("grid", data, cells, jobs=n_jobs, args=(lam_list, int(n_random)), progress=progress,
                     desc="fit + evaluate", label=lambda c: f"{c[0]} {c[1]} seed={c[2]}",
                     weight=lambda c: cell_weight(by_name[c[0]], c[1]))

    def lookup(d: EvalData, r: str, s: int, **_: Any) -> RunOutput:
        return outs[(d.name, r, s)]

    return evaluate(data, routers, seeds, lams=lams, n_random=n_random, progress=False, runner=lookup)
