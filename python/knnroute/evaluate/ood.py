"""In-distribution vs out-of-distribution evaluation (the paper's Table 4 / H.1): train on one task, test on each.

Given several datasets over one model pool (the RouterBench subset's per-task files), every ordered pair
(train task A, test task B) and split seed is one run: the router is fitted (and tuned) on A's training
and validation rows of that seed's split, exactly as in A's own evaluation, and routes B's test rows of
that seed's split. The pair (A, A) is the in-distribution run, identical to ``knnroute eval`` on A. The
reference rows (Oracle, Best-single) depend only on the test rows, so they are the same for every A.

``summarise_ood`` averages the AUC over the ID pairs (A = B) and over the OOD pairs (A != B) per seed,
then reports mean ± std over the seeds, and the drop ``ID - OOD`` (the paper's Δ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from knnroute.evaluate import references as _refs
from knnroute.evaluate.parallel import cell_weight, map_cells
from knnroute.evaluate.runner import EvalData, Split, run_one, split_indices

__all__ = ["cross_task_pair", "evaluate_ood", "format_ood", "ood_cell", "summarise_ood"]


def cross_task_pair(train: EvalData, test: EvalData, seed: int) -> tuple[EvalData, Split]:
    """One (train task, test task) problem: ``train``'s train/val rows of the seed and ``test``'s test rows.

    Returns the stacked data (train task's rows first) and the split that indexes it. Raises
    ``ValueError`` when the two datasets do not share the same models in the same order.
    """
    if list(train.model_names) != list(test.model_names):
        raise ValueError(
            f"cross-task evaluation needs one model pool: {train.name!r} and {test.name!r} have different models"
        )
    if train.X.shape[1] != test.X.shape[1]:
        raise ValueError(f"{train.name!r} and {test.name!r} have embeddings of different widths")
    sa = split_indices(train.n, seed, train.split)
    sb = split_indices(test.n, seed, test.split)
    rows_a = np.concatenate([sa.train, sa.val])
    X = np.concatenate([train.X[rows_a], test.X[sb.test]])
    scores = np.concatenate([train.scores[rows_a], test.scores[sb.test]])
    costs = np.concatenate([train.costs[rows_a], test.costs[sb.test]])
    n_tr, n_va = sa.train.size, sa.val.size
    split = Split(
        train=np.arange(n_tr, dtype=np.int64),
        val=np.arange(n_tr, n_tr + n_va, dtype=np.int64),
        test=np.arange(n_tr + n_va, n_tr + n_va + sb.test.size, dtype=np.int64),
        shipped=sb.shipped,
    )
    data = EvalData(
        name=f"{train.name}->{test.name}",
        X=np.ascontiguousarray(X, dtype=np.float32),
        scores=scores,
        costs=costs,
        model_names=list(train.model_names),
        split=None,
        generated=train.generated or test.generated,
        source=f"train: {train.source}; test: {test.source}",
    )
    return data, split


def evaluate_ood(
    datasets: Sequence[EvalData],
    routers: Sequence[str],
    seeds: Sequence[int],
    *,
    lams: Sequence[float] | None = None,
    n_random: int = _refs.N_RANDOM,
    progress: bool = True,
    jobs: int | None = 1,
) -> list[dict[str, Any]]:
    """Every (train task, test task, router, seed): flat records with ``train_task``, ``test_task``, ``id``.

    Each (train task, router, seed) is fitted once and routes every task's test rows; the result equals
    :func:`run_one` on :func:`cross_task_pair` (tested). The reference rows ``oracle``, ``random`` and
    ``best-single`` are computed per test set; the single-model rows are skipped. Selection routers
    are left out (the paper's Table 4 is the utility-prediction routers). ``jobs`` worker processes
    (``None``: every CPU) run the (train task, seed, router) cells; the records are the serial ones, in
    the serial order.
    """
    from knnroute.evaluate import runner as _runner

    data = list(datasets)
    if len(data) < 2:
        raise ValueError("--ood needs at least two datasets (tasks) over one model pool, e.g. --data routerbench")
    for d in data[1:]:
        if list(d.model_names) != list(data[0].model_names):
            raise ValueError(f"{data[0].name!r} and {d.name!r} have different models: no cross-task table")
    refs = [r for r in routers if r in ("oracle", "random", "best-single")]
    fitted = [r for r in routers if r not in _runner.REFERENCE_ROUTERS and not _is_selection(r)]
    # reference rows depend on the test set only: one cell per seed (train task 0 stands for all)
    cells = [(ai, s, r) for ai in range(len(data)) for s in seeds for r in [*refs, *fitted]
             if not (r in refs and ai != 0)]
    lam_list = None if lams is None else [float(x) for x in lams]
    outs = map_cells(ood_cell, data, cells, jobs=jobs, args=(lam_list, int(n_random)), progress=progress,
                     desc="cross-task (ID/OOD)",
                     label=lambda c: f"train {data[c[0]].name} {c[2]} seed={c[1]}",
                     weight=lambda c: cell_weight(data[c[0]], c[2]) * len(data))
    return [rec for c in cells for rec in outs[c]]


def ood_cell(
    data: Sequence[EvalData], ai: int, s: int, r: str, lams: Sequence[float] | None, n_random: int
) -> list[dict[str, Any]]:
    """The records of one (train task ``data[ai]``, seed, router) cell of :func:`evaluate_ood` (pure)."""
    from knnroute.evaluate import curves as _curves

    a = data[ai]
    records: list[dict[str, Any]] = []
    tests = [(b, split_indices(b.n, s, b.split)) for b in data]
    if r in ("oracle", "random", "best-single"):  # once per test task, tagged for every train task
        for b, _ in tests:
            for rec in run_one(b, r, s, lams=lams, n_random=n_random).records:
                for a2 in data:
                    records.append(_tag(rec, a2, b))
        return records
    sa = split_indices(a.n, s, a.split)
    model, params = _fit(r, a, sa, s)
    for b, sb in tests:
        ts, tc = _curves.fill_missing(b.scores[sb.test], b.costs[sb.test])
        c_max = _curves.cost_scale(tc)
        lam_usd = None if lams is None else np.asarray(lams, dtype=np.float64) / c_max
        oracle = _refs.oracle_curve(ts, tc, c_max, lams=lam_usd)
        best = _refs.best_single_curve(ts, tc, c_max)
        s_hat, c_hat = model.predict(b.X[sb.test])
        cv = _curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max, lams=lam_usd)
        rec = {
            "router": r,
            "seed": int(s),
            "auc": cv.auc,
            "gain": _curves.gain(cv.auc, best.auc, oracle.auc),
            "auc_oracle": oracle.auc,
            "auc_best_single": best.auc,
            "c_max": c_max,
            "n_train": int(sa.train.size),
            "n_val": int(sa.val.size),
            "n_test": int(sb.test.size),
            **params,
        }
        records.append(_tag(rec, a, b))
    return records


def _is_selection(name: str) -> bool:
    try:
        from knnroute.routers.registry import SELECTION_FACTORIES
    except ImportError:
        return False
    return name in SELECTION_FACTORIES


def _tag(rec: dict[str, Any], a: EvalData, b: EvalData) -> dict[str, Any]:
    return {**rec, "dataset": f"{a.name}->{b.name}", "train_task": a.name, "test_task": b.name, "id": a is b}


def _fit(router: str, a: EvalData, sp: Split, seed: int) -> tuple[Any, dict[str, Any]]:
    """The router of ``run_one`` fitted on ``a``'s train rows of ``sp`` (validation: its val rows)."""
    from knnroute.evaluate.cell import make_eval_router
    from knnroute.routers import tuned as _tuning

    if router == "knn-tuned":
        model: Any = _tuning.TunedKNNRouter(random_state=seed)
        params: dict[str, Any] = {}
    else:
        model, params = make_eval_router(router, seed, int(sp.train.size))
    model.fit(
        a.X[sp.train],
        a.scores[sp.train],
        a.costs[sp.train],
        model_names=list(a.model_names),
        X_val=a.X[sp.val],
        scores_val=a.scores[sp.val],
        costs_val=a.costs[sp.val],
    )
    if router == "knn-tuned":
        params = {**model.best_.kwargs(), "val_auc": model.val_auc_}
    return model, params


def summarise_ood(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per router: ID and OOD AUC (mean over pairs per seed, then mean ± std over seeds) and Δ = ID - OOD."""
    out = []
    for router in dict.fromkeys(r["router"] for r in records):
        rs = [r for r in records if r["router"] == router]
        seeds = sorted({r["seed"] for r in rs})
        id_s, ood_s = [], []
        for s in seeds:
            id_s.append(np.mean([r["auc"] for r in rs if r["seed"] == s and r["id"]]))
            ood_s.append(np.mean([r["auc"] for r in rs if r["seed"] == s and not r["id"]]))
        id_a, ood_a = np.array(id_s), np.array(ood_s)
        out.append(
            {
                "router": router,
                "n_seeds": len(seeds),
                "n_id_pairs": len({(r["train_task"], r["test_task"]) for r in rs if r["id"]}),
                "n_ood_pairs": len({(r["train_task"], r["test_task"]) for r in rs if not r["id"]}),
                "id_mean": float(id_a.mean()),
                "id_std": float(id_a.std()),
                "ood_mean": float(ood_a.mean()),
                "ood_std": float(ood_a.std()),
                "delta_mean": float((id_a - ood_a).mean()),
                "delta_std": float((id_a - ood_a).std()),
            }
        )
    return out


def format_ood(summary: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]] | None = None) -> str:
    """The ID / OOD / Δ table, then (with ``records``) the train x test AUC matrix per router."""
    lines = [f"{'ID vs OOD':<14}{'ID':>16}{'OOD':>16}{'delta':>16}"]
    for r in summary:
        lines.append(
            f"{r['router'][:14]:<14}{r['id_mean']:>9.2f} ± {r['id_std']:<4.2f}{r['ood_mean']:>9.2f} ± "
            f"{r['ood_std']:<4.2f}{r['delta_mean']:>9.2f} ± {r['delta_std']:<4.2f}"
        )
    if records:
        tasks = list(dict.fromkeys(r["train_task"] for r in records))
        lines.append("")
        lines.append("AUC by (train task -> test task), mean over seeds; rows: train task")
        for router in dict.fromkeys(r["router"] for r in records):
            if router in ("oracle", "random", "best-single"):
                continue
            lines.append(f"  {router}: " + " | ".join(f"test {t}" for t in tasks))
            for a in tasks:
                vals = [
                    np.mean([r["auc"] for r in records if r["router"] == router and r["train_task"] == a
                             and r["test_task"] == b])
                    for b in tasks
                ]
                lines.append(f"    {a:<20}" + "".join(f"{v:>12.2f}" for v in vals))
    return "\n".join(lines)
