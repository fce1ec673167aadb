"""The ``knnroute eval`` grid on Ray: one task per (dataset, router, seed) cell (``knnroute eval --ray``).

Needs the ``ray`` extra (``pip install '.[ray]' in the knnroute checkout``); ``ray`` is imported inside the function.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from knnroute._ray import init_ray

__all__ = ["evaluate_ray"]


def evaluate_ray(
    datasets: Iterable[Any],
    routers: Sequence[str],
    seeds: Sequence[int],
    *,
    lams: Sequence[float] | None = None,
    n_random: int | None = None,
    progress: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
) -> Any:
    """The evaluation grid with one Ray task per (dataset, router, seed) cell.

    Each dataset's arrays go to the object store once (``ray.put``); each task runs
    :func:`~knnroute.evaluate.runner.run_one` (pure: same inputs, same outputs) and the results are
    assembled by :func:`~knnroute.evaluate.runner.evaluate` in the serial order, so the records, curves and
    extras are those of the local run (timings aside).
    """
    from knnroute.evaluate import references as _refs
    from knnroute.evaluate.runner import evaluate

    ray = init_ray(address, num_cpus)
    data = list(datasets)
    names = [d.name for d in data]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    nr = _refs.N_RANDOM if n_random is None else int(n_random)
    refs = {d.name: ray.put(d) for d in data}
    task = ray.remote(num_cpus=cpus_per_task)(_run_cell)
    cells = [(d.name, r, s) for d in data for s in seeds for r in routers]
    futures = {task.remote(refs[dn], r, s, lams, nr): (dn, r, s) for dn, r, s in cells}
    outs: dict[tuple[str, str, int], Any] = {}
    pending = list(futures)
    bar = None
    if progress:
        from knnroute._progress import bar as _bar

        bar = _bar(len(cells), "fit + evaluate (ray)", unit="run", leave=True)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for f in done:
                outs[futures[f]] = ray.get(f)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    def lookup(d: Any, r: str, s: int, **_: Any) -> Any:
        return outs[(d.name, r, s)]

    return evaluate(data, routers, seeds, lams=lams, n_random=nr, progress=False, runner=lookup)


def _run_cell(data: Any, router: str, seed: int, lams: Sequence[float] | None, n_random: int) -> Any:
    from knnroute.evaluate.runner import run_one

    return run_one(data, router, seed, lams=lams, n_random=n_random)
