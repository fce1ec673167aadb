"""Issue 21: how much of the Oracle a prompt-only router can reach at all, per dataset (no router is fitted).

For each dataset (all prompts, missing scores counted as 0 as in the evaluation):

- ``beta``: share of prompts no model solves (every model's score is 0; for graded scores, the largest score
  is 0); ``alpha``: share every model solves (every model scores at least the best model's mean) -- on
  neither set can routing matter.
- ``best_acc`` / ``oracle_acc``: the mean score of the best single model (highest mean) and of the
  per-prompt best model; ``rescue``: share of prompts the best model fails (score < its max) where another
  model does better: the whole of the Oracle's lead at the max-quality end.
- ``lucky``: for multiple-choice data with ``q`` options, the share of those rescues that M - 1 models each
  answering at random would produce anyway: the rescue rate expected by chance, ``1 - (1 - 1/q)^(M - 1)``, over
  the prompts the best model fails. A rescue that chance explains is not a signal a router can learn.
- **Near-duplicate consistency.** Pairs of different prompts with MiniLM cosine >= ``--dup`` (0.95): the share
  of (pair, model) outcomes that agree, against the same share over random pairs. Identical questions
  answered differently by the same model mark label noise (sampling, judges, parsing); prompts that look
  alike but differ (Winogrande's twin sentences) show why the nearest neighbour can mislead.
- ``twin_oracle``: on prompts with a near duplicate, the mean score of the model that is best *on the
  twin* (ties: the cheaper), against the Oracle and the best single model on the same prompts: what a router
  that knew an almost identical prompt's outcomes exactly would reach.

Run (embeddings cached)::

    KNNROUTE_DATA=/work/shared/data HF_HUB_OFFLINE=1 python3 -m experiments.headroom --data all \\
        --out experiments/headroom.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from knnroute.routers.neighbours import loo_search

# answer options of the multiple-choice datasets (by dataset name); the others are free-form or graded
CHOICES: dict[str, int] = {"arc_challenge": 4, "winograde": 2, "routellm-mmlu": 4}


def analyse(name: str, X: np.ndarray, S: np.ndarray, C: np.ndarray, dup: float, seed: int = 0) -> dict[str, Any]:
    s = np.where(np.isnan(S), 0.0, S)
    c = np.where(np.isnan(C), np.nanmean(C, axis=0)[None, :], C)
    n, M = s.shape
    mean = s.mean(axis=0)
    best = int(np.lexsort((c.mean(axis=0), -mean))[0])  # highest mean score, then cheaper
    top = s.max(axis=1)
    out: dict[str, Any] = {"dataset": name, "n": n, "models": M}
    out["beta"] = float(np.mean(top <= 0.0))
    out["alpha"] = float(np.mean(s.min(axis=1) >= top.max()))
    out["best_model_acc"] = float(mean[best])
    out["oracle_acc"] = float(top.mean())
    fails = s[:, best] < top
    out["rescue"] = float(np.mean(fails))
    q = CHOICES.get(name)
    miss = s[:, best] <= 0.0
    if q is not None:
        out["chance_rescue_rate"] = float(1.0 - (1.0 - 1.0 / q) ** (M - 1))
        out["observed_rescue_rate"] = float(np.mean(top[miss] > 0)) if miss.any() else float("nan")
    # near duplicates: each prompt's nearest other prompt
    idx, sim = loo_search(np.ascontiguousarray(X, dtype=np.float32), 1)
    j, sj = idx[:, 0], sim[:, 0]
    d = sj >= dup
    out["dup_threshold"] = dup
    out["dup_prompts"] = int(d.sum())
    out["dup_share"] = float(d.mean())
    binary = bool(np.all((s == 0) | (s == 1)))
    if d.any():
        if binary:
            out["dup_agree"] = float(np.mean(s[d] == s[j[d]]))
            rp = np.random.default_rng(seed).permutation(n)
            out["random_agree"] = float(np.mean(s == s[rp]))
        else:
            out["dup_abs_diff"] = float(np.mean(np.abs(s[d] - s[j[d]])))
            rp = np.random.default_rng(seed).permutation(n)
            out["random_abs_diff"] = float(np.mean(np.abs(s - s[rp])))
        twin = s[j[d]]
        # best on the twin (ties: cheaper on the twin), scored on the prompt itself
        pick = np.array([np.lexsort((c[jj], -twin[r]))[0] for r, jj in enumerate(j[d])])
        out["twin_oracle_acc"] = float(s[d][np.arange(d.sum()), pick].mean())
        out["oracle_acc_on_dups"] = float(s[d].max(axis=1).mean())
        out["best_model_acc_on_dups"] = float(s[d][:, best].mean())
    out["binary"] = binary
    return out


def mathv_split(ds: Any, S: np.ndarray) -> dict[str, Any]:
    """MATH-V mixes 5-option multiple-choice and free-form answers: the rescue rates of each part."""
    from knnroute.data.registry import data_dir

    opts = {}
    with open(data_dir() / "math-v" / "data" / "test.jsonl", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            opts[str(item["id"])] = len(item.get("options") or [])
    q = np.array([opts.get(str(i), 0) for i in ds.ids])
    s = np.where(np.isnan(S), 0.0, S)
    best = int(np.argmax(s.mean(axis=0)))
    out: dict[str, Any] = {}
    for label, rows in (("mc", q > 0), ("free", q == 0)):
        miss = rows & (s[:, best] <= 0)
        out[f"{label}_share"] = float(rows.mean())
        out[f"{label}_best_model_acc"] = float(s[rows, best].mean())
        out[f"{label}_oracle_acc"] = float(s[rows].max(axis=1).mean())
        out[f"{label}_observed_rescue_rate"] = float(np.mean(s[miss].max(axis=1) > 0))
        if label == "mc":
            out["mc_chance_rescue_rate"] = float(1.0 - (1.0 - 1.0 / 5) ** (S.shape[1] - 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="routerbench")
    ap.add_argument("--dup", type=float, default=0.95)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from knnroute.commands.eval import load_eval_data

    rows = []
    for ed, ds in load_eval_data(args.data, progress=False):
        r = analyse(ed.name, ed.X, ed.scores, ed.costs, args.dup)
        if ed.name == "math-v":
            r.update(mathv_split(ds, ed.scores))
        rows.append(r)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
