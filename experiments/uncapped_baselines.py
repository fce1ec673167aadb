"""Issue 21, fair baselines: the learned routers with and without their training-row caps, paired by seed.

``docs/baselines.md`` lists the caps (``max_train_rows``: 500 for the k=100 neighbour routers, 1,000 for the
k=10 ones and the selection routers, 4,000 for the MF routers). This script evaluates each router on each
dataset where its cap binds (more training prompts than the cap) twice per seed, exactly as ``knnroute eval``
does (``run_cell``): once with the registry's settings, once with ``max_train_rows=None``. Every other
setting (epochs, patience, early stopping on validation) is unchanged. One JSON line per (dataset, router,
seed) with both AUCs and both fit times goes to ``--out`` as it finishes.

Run::

    KNNROUTE_DATA=/work/shared/data HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 \\
        python3 -m experiments.uncapped_baselines --data all --seeds 0 --out experiments/uncapped_baselines.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from knnroute.evaluate import cell as _cell
from knnroute.evaluate.cell import run_cell, split_indices

ROUTERS = ("dattn-100", "graph-100", "attn-100", "dattn-10", "graph-10", "attn-10", "linear-mf", "mlp-mf")


def cap_of(name: str) -> int | None:
    """The training-row cap ``name`` runs under in ``knnroute eval`` (None: uncapped)."""
    return getattr(_cell._baseline_factories()[name](random_state=0), "max_train_rows", None)


def summarise(path: str, seeds: Sequence[int] | None = None) -> str:
    """Markdown: per (router, dataset) the capped and uncapped AUC (mean over the seeds run, or over
    ``seeds``), the paired difference, and the fit times."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    rows = list({(r["dataset"], r["router"], r["seed"]): r for r in rows}.values())  # a re-run replaces
    rows = [r for r in rows if seeds is None or r["seed"] in seeds]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["router"], r["dataset"]), []).append(r)
    out = ["| router | dataset | train prompts (cap) | seeds | AUC capped | AUC uncapped | diff "
           "| fit s capped -> uncapped |",
           "|---|---|---|---|---|---|---|---|"]
    for (router, ds), rs in sorted(groups.items()):
        d = [r["auc_uncapped"] - r["auc_capped"] for r in rs]
        out.append(
            f"| {router} | {ds} | {rs[0]['n_train']:,} ({rs[0]['cap']:,}) | {len(rs)} | "
            f"{sum(r['auc_capped'] for r in rs) / len(rs):.2f} | {sum(r['auc_uncapped'] for r in rs) / len(rs):.2f} | "
            f"{sum(d) / len(d):+.2f} | {sum(r['fit_s_capped'] for r in rs) / len(rs):.1f} -> "
            f"{sum(r['fit_s_uncapped'] for r in rs) / len(rs):.1f} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summary", metavar="JSONL", help="only print the table of a saved run")
    ap.add_argument("--data", default="all")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--seeds", default=None, help="comma list of split seeds (default 0; with --summary: all)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.summary:
        print(summarise(args.summary, [int(x) for x in args.seeds.split(",")] if args.seeds else None))
        return 0
    if not args.out:
        ap.error("--out is required")
    import torch

    torch.set_num_threads(1)
    from knnroute.commands.eval import load_eval_data

    data = sorted((ed for ed, _ in load_eval_data(args.data, progress=False)), key=lambda d: d.n)
    seeds = [int(s) for s in (args.seeds or "0").split(",")]
    base = _cell._baseline_factories()
    for ed in data:
        for name in args.routers.split(","):
            cap = cap_of(name)
            for seed in seeds:
                n_train = int(split_indices(ed.n, seed, ed.split).train.size)
                if cap is None or n_train <= cap:
                    continue
                row = {"dataset": ed.name, "router": name, "seed": seed, "n_train": n_train, "cap": cap}
                for label, factories in (
                    ("capped", base),
                    ("uncapped", {**base, name: lambda _f=base[name], **kw: _f(**{**kw, "max_train_rows": None})}),
                ):
                    _cell._baseline_factories = lambda f=factories: f  # type: ignore[assignment]
                    t0 = time.perf_counter()
                    rec = run_cell(ed, name, seed).records[0]
                    row[f"auc_{label}"] = rec["auc"]
                    row[f"fit_s_{label}"] = rec["fit_seconds"]
                    row[f"wall_s_{label}"] = time.perf_counter() - t0
                    row["auc_best_single"], row["auc_oracle"] = rec["auc_best_single"], rec["auc_oracle"]
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
