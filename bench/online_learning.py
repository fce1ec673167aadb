"""Online learning from bandit feedback on RouterBench (issue 18, part 5): what the gateway's
``/v1/feedback`` does to routing quality.

Per task of the RouterBench 0-shot subset (shipped split; validation rows join the training stream):
start a kNN router on a seeded 10% of the training rows with full information (every model's outcome),
then replay the other 90% as traffic: each prompt is routed at a lambda drawn from the evaluation's dense
lambda grid (clients with mixed budgets), and only the routed model's score and cost are revealed and added
as one row (other models NaN = unobserved), exactly what the gateway adds per feedback. Test AUC (exact
sweep, non-decreasing hull, cost / c_max) is measured at checkpoints against the number of feedbacks, beside
the router fitted on all training rows with full information and the Best-single hull. ``--explore E``
also runs epsilon-greedy traffic (a uniformly random model with probability E).

    KNNROUTE_CACHE=/tmp/eqcache HF_HUB_OFFLINE=1 python -m bench.online_learning \
        --out docs/gateway-online-learning.png --json docs/gateway-online-learning.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

P: dict[str, Any] = {"k": 20, "shrinkage": 0.0}  # set by main()


def _auc(router: Any, Xt: np.ndarray, St: np.ndarray, Ct: np.ndarray, c_max: float) -> float:
    from knnroute.routers.curves import curve_from_predictions

    s, c = router.predict(Xt)
    return float(curve_from_predictions(np.nan_to_num(s), np.nan_to_num(c), St, Ct, c_max).auc)


def run_task(ds: Any, seeds: Sequence[int], explore: Sequence[float], n_checkpoints: int) -> dict[str, Any]:
    from knnroute.evaluate.references import best_single_curve, oracle_curve
    from knnroute.production import ProductionRouter
    from knnroute.routers.curves import cost_scale, dense_lambda_grid, fill_missing
    from knnroute.routers.knn import KNNRouter

    split = np.asarray(ds.split)
    tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    X = np.asarray(ds.embeddings, dtype=np.float32)
    S, C = np.asarray(ds.scores, dtype=np.float64), np.asarray(ds.costs, dtype=np.float64)
    St, Ct = fill_missing(S[te], C[te])
    c_max = cost_scale(Ct)
    M = S.shape[1]
    full = KNNRouter(k=P["k"], shrinkage=P["shrinkage"]).fit(X[tr], S[tr], C[tr])
    out: dict[str, Any] = {
        "task": ds.name, "n_train": int(len(tr)), "n_test": int(len(te)), "models": M, "k": P["k"],
        "shrinkage": P["shrinkage"],
        "full_information_auc": _auc(full, X[te], St, Ct, c_max),
        "best_single_auc": float(best_single_curve(St, Ct, c_max).auc),
        "oracle_auc": float(oracle_curve(St, Ct, c_max).auc), "runs": [],
    }
    grid = dense_lambda_grid(c_max, n=200)
    for eps in explore:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            order = rng.permutation(tr)
            n0 = max(P["k"], int(round(0.1 * len(order))))
            start, stream = order[:n0], order[n0:]
            prod = ProductionRouter(KNNRouter(k=P["k"], shrinkage=P["shrinkage"]).fit(X[start], S[start], C[start]))
            checks = set(np.linspace(0, len(stream), n_checkpoints + 1).astype(int).tolist())
            xs, aucs, counts = [], [], np.zeros(M, dtype=np.int64)
            t0 = time.perf_counter()
            for i, r in enumerate(stream):
                if i in checks:
                    xs.append(i)
                    aucs.append(_auc(prod.knn, X[te], St, Ct, c_max))
                lam = float(grid[rng.integers(len(grid))])
                j = int(rng.integers(M)) if eps > 0 and rng.random() < eps else prod.decide(X[r], lam).index
                s_row, c_row = np.full((1, M), np.nan), np.full((1, M), np.nan)
                s_row[0, j] = 0.0 if np.isnan(S[r, j]) else S[r, j]
                c_row[0, j] = np.nanmean(C[tr, j]) if np.isnan(C[r, j]) else C[r, j]
                prod.add(X[r][None, :], s_row, c_row)
                counts[j] += 1
            xs.append(len(stream))
            aucs.append(_auc(prod.knn, X[te], St, Ct, c_max))
            out["runs"].append({"explore": eps, "seed": seed, "start_rows": int(n0), "feedbacks": xs,
                                "auc": aucs, "feedback_per_model": counts.tolist(),
                                "seconds": round(time.perf_counter() - t0, 2)})
    out["model_names"] = list(ds.model_names)
    return out


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.8), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        combos = sorted({(r["shrinkage"], r["explore"]) for r in res["runs"]})
        for (sh, eps), color in zip(combos, ("C0", "C1", "C2", "C4", "C5", "C6"), strict=False):
            runs = [r for r in res["runs"] if (r["shrinkage"], r["explore"]) == (sh, eps)]
            x = np.asarray(runs[0]["feedbacks"])
            y = np.asarray([r["auc"] for r in runs])
            lab = f"bandit, shrinkage {sh:g}" + ("" if eps == 0 else f", explore {eps:g}")
            ax.plot(x, y.mean(0), color=color, label=f"{lab} ({len(runs)} seeds)")
            ax.fill_between(x, y.min(0), y.max(0), color=color, alpha=0.15)
        for (sh, auc), ls in zip(res["full_information_auc"].items(), ("--", "-."), strict=False):
            ax.axhline(auc, color="k", ls=ls, lw=1, label=f"all training rows, full info, shrinkage {float(sh):g}")
        ax.axhline(res["best_single_auc"], color="C3", ls=":", label="Best-single hull")
        ax.set_title(f"{res['task']} (start {res['runs'][0]['start_rows']} rows, test {res['n_test']})")
        ax.set_xlabel("feedbacks (one routed outcome each)")
        ax.set_ylabel("test AUC")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.environ.get("KNNROUTE_DATA", "/work/shared/data"),
                                                   "routerbench-0shot-subset"))
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--explore", type=float, nargs="*", default=[0.0, 0.1])
    p.add_argument("--shrinkage", type=float, nargs="*", default=[0.0, 10.0],
                   help="pseudo-counts toward each model's prior (one set of runs each)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--out", default="docs/gateway-online-learning.png")
    p.add_argument("--json", default="docs/gateway-online-learning.json")
    args = p.parse_args(argv)
    P.update(k=args.k)
    import knnroute_core
    from knnroute.data import load_dataset
    from knnroute.embed import embed_dataset

    results = []
    for ds in load_dataset(args.data):
        ds = embed_dataset(ds, args.embedder, progress=False)
        per = []
        for sh in args.shrinkage:
            P["shrinkage"] = sh
            r = run_task(ds, list(range(args.seeds)), args.explore, args.checkpoints)
            for x in r["runs"]:
                x["shrinkage"] = sh
            per.append(r)
            for e in args.explore:
                runs = [x for x in r["runs"] if x["explore"] == e]
                first = np.mean([x["auc"][0] for x in runs])
                print(f"{r['task']} shrinkage {sh:g} explore {e:g}: start AUC {first:.2f}"
                      f" -> after {runs[0]['feedbacks'][-1]} feedbacks {np.mean([x['auc'][-1] for x in runs]):.2f}"
                      f" | full information {r['full_information_auc']:.2f} | Best-single {r['best_single_auc']:.2f}"
                      f" | Oracle {r['oracle_auc']:.2f}", flush=True)
        merged = dict(per[0])
        merged["full_information_auc"] = {str(x["shrinkage"]): x["full_information_auc"] for x in per}
        merged["runs"] = [run for x in per for run in x["runs"]]
        merged.pop("shrinkage", None)
        results.append(merged)
    meta = {"isa": knnroute_core.isa(), "embedder": args.embedder, "seeds": args.seeds, "k": args.k,
            "shrinkage": args.shrinkage,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"meta": meta, "tasks": results}, fh, indent=1)
    plot(results, args.out)
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
