"""Issue 30: does the quality guarantee hold on held-out data, and what does it save? (``docs/guarantees.md``)

For each of the nine datasets (RouterBench ARC-C / MBPP / Winogrande, LLMRouter, RouteLLM MMLU / GSM8K /
MT-Bench, RouterArena, MATH-V) and each seed: a seeded random 60/20/20 split of all prompts into train
(the router's rows), calibration and test, so calibration and test are exchangeable draws; a kNN router
(k = 20, similarity weights) on WordLlama embeddings of the train prompts (the guarantee does not depend on
the embedder, and WordLlama embeds all nine datasets in about a minute); the best single model is the best
mean on train. For each floor ``a`` in {0.90, 0.95, 0.99} and delta = 0.1, three calibrations pick an
operating point on the calibration prompts, which is then scored on the test prompts:

* ``guarantee``: :func:`knnroute.production.guarantee.calibrate` (Learn-then-Test, fixed sequence over the
  lambda grid, betting p-values); nothing certified means every request goes to the best model;
* ``guarantee-hb``: the same with Hoeffding-Bentkus p-values;
* ``naive-val``: the cheapest lambda of the grid whose calibration mean quality is >= a x the best model's,
  no bound;
* ``naive-share``: RouteLLM's calibration: the smallest share of the most expensive model whose calibration
  quality meets the floor, re-applied on the test traffic as a share (the lambda whose test share is the
  largest not above it), as a threshold calibrated to a share is.

A run violates when its test mean quality is below ``a`` x the best model's test mean quality. Saved cost is
``1 - test mean cost / the best model's test mean cost``. Writes one JSON line per (dataset, seed, floor,
method) and prints the summary table.

    HF_HUB_OFFLINE=1 python -m experiments.guarantees --out experiments/guarantees.jsonl --plot docs/guarantees.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FLOORS = (0.90, 0.95, 0.99)
METHODS = ("guarantee", "guarantee-hb", "naive-val", "naive-share")


def datasets() -> list[Any]:
    from knnroute.data import list_real_datasets, load_dataset
    from knnroute.embed import embed_dataset

    out = []
    for name in list_real_datasets():
        for ds in load_dataset(name):
            out.append(embed_dataset(ds, embedder="wordllama", progress=False))
    return out


def one_run(ds: Any, seed: int, delta: float, k: int = 20) -> list[dict[str, Any]]:
    from knnroute.data.splits import random_split
    from knnroute.production.guarantee import calibrate, lambda_grid, routed_outcomes
    from knnroute.routers.curves import cost_scale, fill_missing
    from knnroute.routers.knn import KNNRouter

    lab = random_split(ds.n, seed, (0.6, 0.2, 0.2))
    tr, ca, te = (np.flatnonzero(lab == s) for s in ("train", "val", "test"))
    X = np.asarray(ds.embeddings, dtype=np.float32)
    S, C = np.asarray(ds.scores, dtype=np.float64), np.asarray(ds.costs, dtype=np.float64)
    names = list(ds.model_names)
    router = KNNRouter(k=k, weighting="similarity").fit(X[tr], S[tr], C[tr], model_names=names)
    ts_tr, tc_tr = fill_missing(S[tr], C[tr])
    best = int(np.argmax(ts_tr.mean(axis=0)))
    lams = lambda_grid(cost_scale(C[tr]))
    sh_c, ch_c = router.predict(X[ca])
    sh_t, ch_t = router.predict(X[te])
    order = np.random.default_rng(1000 + seed).permutation(ca.size)  # calibration order: random, not file order
    ca = ca[order]
    sh_c, ch_c = sh_c[order], ch_c[order]
    table = calibrate(sh_c, ch_c, S[ca], C[ca], names, names[best], lams, delta=delta)
    table_hb = calibrate(sh_c, ch_c, S[ca], C[ca], names, names[best], lams, delta=delta, bound="hb")
    qc, _, ic = routed_outcomes(sh_c, ch_c, S[ca], C[ca], lams)
    qt, ct, it = routed_outcomes(sh_t, ch_t, S[te], C[te], lams)
    ts_c, _ = fill_missing(S[ca], C[ca])
    ts_t, tc_t = fill_missing(S[te], C[te])
    best_q_t, best_c_t = float(ts_t[:, best].mean()), float(tc_t[:, best].mean())
    strong = names.index(table.strong_model)
    share_c, share_t = (ic == strong).mean(axis=0), (it == strong).mean(axis=0)
    rows = []
    for a in FLOORS:
        picks: dict[str, int | None] = {}
        for m, tab in (("guarantee", table), ("guarantee-hb", table_hb)):
            cert = tab.for_floor(a)
            picks[m] = None if cert.lam is None else int(np.flatnonzero(lams == cert.lam)[0])
        ok = np.flatnonzero(qc.mean(axis=0) >= a * ts_c[:, best].mean())
        picks["naive-val"] = int(ok.max()) if ok.size else None
        if ok.size:  # the smallest strong share meeting the floor on calibration, then the same share on test
            p = float(share_c[ok].min())
            under = np.flatnonzero(share_t <= p + 1e-12)
            picks["naive-share"] = int(under.min()) if under.size else int(np.argmin(share_t))
        else:
            picks["naive-share"] = None
        for m in METHODS:
            g = picks[m]
            q, c = (best_q_t, best_c_t) if g is None else (float(qt[:, g].mean()), float(ct[:, g].mean()))
            rows.append({"dataset": ds.name, "seed": seed, "floor": a, "method": m, "delta": delta,
                         "n_cal": int(ca.size), "n_test": int(te.size), "lam": None if g is None else float(lams[g]),
                         "all_to_best": g is None, "test_quality": q, "test_cost": c, "best_quality": best_q_t,
                         "best_cost": best_c_t, "ratio": q / best_q_t if best_q_t > 0 else math.nan,
                         "violated": bool(q < a * best_q_t - 1e-12),
                         "saved": 1.0 - c / best_c_t if best_c_t > 0 else math.nan})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    out = ["| dataset | floor | " + " | ".join(f"{m}: violations | saved" for m in METHODS) + " |",
           "|---|---|" + "---|---|" * len(METHODS)]
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    for a in FLOORS:
        for d in [*names, "all"]:
            cells = []
            for m in METHODS:
                sel = [r for r in rows if r["floor"] == a and r["method"] == m and (d == "all" or r["dataset"] == d)]
                v = sum(r["violated"] for r in sel)
                saved = np.nanmean([r["saved"] for r in sel]) if sel else math.nan
                cells += [f"{v}/{len(sel)}", f"{100 * saved:.1f}%"]
            out.append(f"| {d} | {a:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(FLOORS))
    for j, m in enumerate(METHODS):
        viol = [np.mean([r["violated"] for r in rows if r["floor"] == a and r["method"] == m]) for a in FLOORS]
        saved = [np.nanmean([r["saved"] for r in rows if r["floor"] == a and r["method"] == m]) for a in FLOORS]
        w = 0.8 / len(METHODS)
        axes[0].bar(x + (j - (len(METHODS) - 1) / 2) * w, viol, w, label=m)
        axes[1].bar(x + (j - (len(METHODS) - 1) / 2) * w, np.asarray(saved) * 100, w, label=m)
    delta = rows[0]["delta"]
    axes[0].axhline(delta, color="k", ls="--", lw=1, label=f"delta = {delta:g}")
    for ax, title in ((axes[0], "violation rate (test quality below the floor)"),
                      (axes[1], "cost saved vs the best single model (%)")):
        ax.set_xticks(x, [f"floor {a:g}" for a in FLOORS])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    n = len({(r["dataset"], r["seed"]) for r in rows})
    fig.suptitle(f"Quality floor calibrations on {n} (dataset, seed) runs, held-out test prompts", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--out", default=None, help="JSON lines, one per (dataset, seed, floor, method)")
    p.add_argument("--plot", default=None, help="PNG of violation rates and savings")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for ds in datasets():
        for seed in range(a.seeds):
            rows += one_run(ds, seed, a.delta)
        print(f"{ds.name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if a.plot:
        plot(rows, a.plot)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
