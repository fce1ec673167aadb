"""Quality table: kNN with two embedders on every real dataset, from two ``knnroute eval --json`` files.

Usage (the run behind ``docs/static-embedder.md``)::

    knnroute eval --data all --embedder minilm    --routers knn-100,knn-tuned --seeds 5 --json minilm.json
    knnroute eval --data all --embedder wordllama --routers knn-100,knn-tuned --seeds 5 --json wordllama.json
    python bench/embedder_table.py minilm.json wordllama.json

Prints a markdown table: AUC mean ± std over seeds for each embedder, and the paired per-seed difference
(B − A; both runs use the same splits per seed, so the pairing removes the split noise). Std is the
population std (ddof=0) over seeds, as in every `knnroute eval` table.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

import numpy as np

ROUTERS = ("knn-100", "knn-tuned")


def _per_seed(path: str) -> tuple[dict[tuple[str, str], dict[int, float]], dict[str, dict[str, Any]], list[str], str]:
    with open(path, encoding="utf-8") as fh:
        j = json.load(fh)
    auc: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    ref: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for r in j["results"]:
        if r["dataset"] not in order:
            order.append(r["dataset"])
        auc[(r["dataset"], r["router"])][int(r["seed"])] = float(r["auc"])
        ref.setdefault(r["dataset"], {"best": {}, "n_test": r["n_test"]})["best"][int(r["seed"])] = float(
            r["auc_best_single"]
        )
    return auc, ref, order, str(j["meta"]["arguments"]["embedder"])


def _ms(v: list[float]) -> str:
    a = np.asarray(v, dtype=float)
    return f"{a.mean():.2f} ± {a.std():.2f}"


def _signed(v: list[float]) -> str:
    a = np.asarray(v, dtype=float)
    return f"{a.mean():+.2f} ± {a.std():.2f}"


def table(path_a: str, path_b: str) -> str:
    A, ref, order, name_a = _per_seed(path_a)
    B, _, _, name_b = _per_seed(path_b)
    head = ["dataset", "test n", "best-single"]
    for r in ROUTERS:
        head += [f"{r} {name_a}", f"{r} {name_b}", f"Δ {r}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in order:
        row = [ds, str(ref[ds]["n_test"]), _ms(list(ref[ds]["best"].values()))]
        for r in ROUTERS:
            a, b = A.get((ds, r), {}), B.get((ds, r), {})
            seeds = sorted(set(a) & set(b))
            if not seeds:
                row += ["–", "–", "–"]
                continue
            row += [_ms([a[s] for s in seeds]), _ms([b[s] for s in seeds]),
                    _signed([b[s] - a[s] for s in seeds])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(table(sys.argv[1], sys.argv[2]))
