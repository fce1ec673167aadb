"""The evaluation grid on a local process pool (``knnroute eval --jobs N``).

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
from collections.abc import Iterable, Sequence
from typing import Any

from knnroute.evaluate import references as _refs
from knnroute.evaluate.runner import EvalData, EvalResult, RunOutput, evaluate, run_one

__all__ = ["default_jobs", "evaluate_processes"]

# Relative cost of one cell per training prompt, from the fit + evaluation times of the full grid
# (docs/baselines.md, Table 3): only the order matters.
_WEIGHT = {
    "dattn-100": 12.0, "attn-100": 9.0, "logreg": 8.0, "mlp-clf": 6.0, "dattn-10": 6.0, "graph-100": 5.0,
    "attn-10": 3.0, "graph-10": 3.0, "linear-mf": 3.0, "mlp-mf": 3.0, "mlp": 3.0, "knn-tuned": 1.0,
    "linear": 0.5,
}

_DATA: dict[str, EvalData] = {}


def default_jobs() -> int:
    """The CPUs this process may run on (``sched_getaffinity``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init(data: list[EvalData]) -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    _DATA.clear()
    _DATA.update({d.name: d for d in data})


def _cell(name: str, router: str, seed: int, lams: Sequence[float] | None, n_random: int) -> RunOutput:
    return run_one(_DATA[name], router, seed, lams=lams, n_random=n_random)


def _weight(d: EvalData, router: str) -> float:
    base = router.split("@", 1)[0]
    return _WEIGHT.get(base, 0.05) * d.n * (1.0 + 0.1 * d.n_models)


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
    n_jobs = default_jobs() if jobs is None else int(jobs)
    if n_jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    cells = [(d, r, s) for d in data for s in seeds for r in routers]
    if n_jobs == 1 or len(cells) <= 1:
        return evaluate(data, routers, seeds, lams=lams, n_random=n_random, progress=progress)

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    order = sorted(cells, key=lambda c: -_weight(c[0], c[1]))
    outs: dict[tuple[str, str, int], RunOutput] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc=f"fit + evaluate ({n_jobs} processes)", unit="run", dynamic_ncols=True)
    lam_list = None if lams is None else [float(x) for x in lams]
    ex = ProcessPoolExecutor(
        max_workers=min(n_jobs, len(cells)), mp_context=mp.get_context("spawn"), initializer=_init, initargs=(data,)
    )
    try:
        futures = {ex.submit(_cell, d.name, r, s, lam_list, int(n_random)): (d.name, r, s) for d, r, s in order}
        pending: set[Any] = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                key = futures[f]
                exc = f.exception()
                if exc is not None:
                    raise RuntimeError(f"evaluation cell dataset={key[0]!r} router={key[1]!r} seed={key[2]} "
                                       f"failed: {exc!r}") from exc
                outs[key] = f.result()
                if bar is not None:
                    bar.set_postfix_str(f"{key[0]} {key[1]} seed={key[2]}", refresh=False)
                    bar.update(1)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()

    def lookup(d: EvalData, r: str, s: int, **_: Any) -> RunOutput:
        return outs[(d.name, r, s)]

    return evaluate(data, routers, seeds, lams=lams, n_random=n_random, progress=False, runner=lookup)
