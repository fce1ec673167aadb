"""Issue 30, items 2 and 3: do the per-decision bounds cover at their stated level, and how often do
decisions change under meaning-preserving edits of the prompt, before and after text normalisation?
(``docs/guarantees.md``)

For each of the nine datasets (as in ``experiments/guarantees.py``) and each seed: a seeded random 60/20/20
split into train (the router's rows), calibration and test; a kNN router (k = 20, similarity weights) on
WordLlama embeddings of the prompts as the embedder gets them (the shared prefix stripped). Two routers:

* ``before``: the text embedded as it is (every router saved before ``text_norm``);
* ``after``: the text through :class:`knnroute.embed.textnorm.TextNormaliser` fitted on the train prompts
  (what ``knnroute fit`` now does by default), at fit and at route time.

**Flips.** The operating lambda is chosen on the calibration prompts: the lambda of the grid
(:func:`knnroute.production.guarantee.lambda_grid`) whose routed mean cost is closest to halfway between the
router's cost at lambda = 0 and its cheapest point (a mixed operating point, where decisions are hardest).
Each test prompt is edited in six meaning-preserving ways (:func:`edit`: ``case`` lower-cases it (upper-cases
an all-lower-case one), ``whitespace`` doubles three spaces and adds a leading space and a trailing newline,
``punctuation`` drops (or adds) the final mark and the commas, ``typo1`` / ``typo2`` make one / two typos
(swap, drop or double a letter of a word of 3+ letters), ``polite`` prepends "Please help me with this: ").
The edits apply to the text the user writes (after the shared few-shot prefix). A flip is a test prompt whose
routed model at the operating lambda differs from the unedited prompt's. AUC: the test curve's (exact
breakpoints, non-decreasing convex hull).

**Coverage.** The ``after`` router's bounds (:mod:`knnroute.production.bounds`) are calibrated on the
calibration prompts at each level in ``LEVELS``; on the test prompts, coverage is the share of observed
(prompt, model) cells whose realised score (cost) lies in the bound, among prompts with a bound (not
``far``); ``far`` is the share of test prompts without one.

    HF_HUB_OFFLINE=1 python -m experiments.robustness --out experiments/robustness.jsonl --plot docs/robustness.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("case", "whitespace", "punctuation", "typo1", "typo2", "polite")
LEVELS = (0.8, 0.9, 0.95)
_WORD3 = re.compile(r"[A-Za-z]{3,}")


def _typo(t: str, rng: np.random.Generator, n: int) -> str:
    for _ in range(n):
        words = list(_WORD3.finditer(t))
        if not words:
            return t
        s, e = words[int(rng.integers(len(words)))].span()
        i, op = int(rng.integers(s, e - 1)), int(rng.integers(3))
        t = (t[:i] + t[i + 1] + t[i] + t[i + 2:] if op == 0 else t[:i] + t[i + 1:] if op == 1
             else t[:i] + t[i] + t[i:])
    return t


def edit(t: str, kind: str, rng: np.random.Generator) -> str:
    """``t`` with one meaning-preserving edit of ``kind`` (see the module docstring)."""
    if kind == "case":
        return t.lower() if t.lower() != t else t.upper()
    if kind == "whitespace":
        spaces = [m.start() for m in re.finditer(" ", t)]
        pick = rng.choice(spaces, size=min(3, len(spaces)), replace=False) if spaces else []
        for i in sorted(pick, reverse=True):
            t = t[:i] + "  " + t[i + 1:]
        return " " + t + "\n"
    if kind == "punctuation":
        t2 = t.rstrip()
        return (t2[:-1] if t2 and t2[-1] in ".?!:" else t2 + "?").replace(", ", " ")
    if kind in ("typo1", "typo2"):
        return _typo(t, rng, 1 if kind == "typo1" else 2)
    if kind == "polite":
        return "Please help me with this: " + t
    raise ValueError(f"unknown edit {kind!r}")


def texts_of(ds: Any) -> list[str]:
    """The prompts as the embedder gets them: the dataset's shared prefix stripped."""
    from knnroute.data.hygiene import PrefixStripper

    texts = list(ds.prompts)
    st = ds.meta.get("prefix_stripper")
    if st and st.get("prefixes"):
        texts = PrefixStripper.from_dict(st).transform(texts, None if ds.groups is None else list(ds.groups))
    return texts


def operating_lambda(knn: Any, X: np.ndarray, S: np.ndarray, C: np.ndarray, lams: np.ndarray) -> float:
    from knnroute.production.guarantee import routed_outcomes

    sh, ch = knn.predict(X)
    _, cc, _ = routed_outcomes(sh, ch, S, C, lams)
    mc = cc.mean(axis=0)
    return float(lams[int(np.argmin(np.abs(mc - (mc[0] + mc.min()) / 2)))])


def coverage_rows(knn: Any, ds: Any, X: np.ndarray, ca: np.ndarray, te: np.ndarray, seed: int) -> list[dict[str, Any]]:
    from knnroute.production import ProductionRouter

    prod = ProductionRouter(knn)
    S, C = np.asarray(ds.scores, np.float64), np.asarray(ds.costs, np.float64)
    rows = []
    for level in LEVELS:
        prod.calibrate_bounds(X[ca], S[ca], C[ca], level=level)
        b = prod.predict_bounds(X[te])
        ok = ~b["far"][:, None]
        row: dict[str, Any] = {"dataset": ds.name, "seed": seed, "kind": "coverage", "level": level,
                               "n_cal": int(ca.size), "n_test": int(te.size), "far": float(b["far"].mean())}
        for what, T, lo, hi in (("score", S[te], b["score_lower"], b["score_upper"]),
                                ("cost", C[te], b["cost_lower"], b["cost_upper"])):
            cell = ok & np.isfinite(T) & np.isfinite(lo)
            inside = (T >= lo - 1e-6) & (T <= hi + 1e-6)
            per_model = [float(inside[cell[:, m], m].mean()) for m in range(T.shape[1]) if cell[:, m].any()]
            row[f"{what}_coverage"] = float(inside[cell].mean())
            row[f"{what}_cells"] = int(cell.sum())
            row[f"{what}_model_min"] = float(min(per_model))
            row[f"{what}_width"] = float(np.nanmean(np.where(cell, hi - lo, np.nan)))
        row["binary"] = bool(np.isin(S[np.isfinite(S)], (0.0, 1.0)).all())
        rows.append(row)
    return rows


def one_run(ds: Any, texts: list[str], seed: int, k: int = 20) -> list[dict[str, Any]]:
    from knnroute.data.splits import random_split
    from knnroute.embed import embed_texts, get_embedder
    from knnroute.embed.textnorm import TextNormaliser
    from knnroute.production.guarantee import lambda_grid
    from knnroute.routers.curves import cost_scale, curve_from_predictions, fill_missing
    from knnroute.routers.knn import KNNRouter

    emb = get_embedder("wordllama")
    lab = random_split(ds.n, seed, (0.6, 0.2, 0.2))
    tr, ca, te = (np.flatnonzero(lab == s) for s in ("train", "val", "test"))
    S, C = np.asarray(ds.scores, np.float64), np.asarray(ds.costs, np.float64)
    names = list(ds.model_names)
    rng = np.random.default_rng(10_000 + seed)
    edited = {kind: [edit(texts[i], kind, rng) for i in te] for kind in KINDS}
    norm = TextNormaliser.fit([texts[i] for i in tr])
    ts, tc = fill_missing(S[te], C[te])
    lams = lambda_grid(cost_scale(C[tr]))
    rows: list[dict[str, Any]] = []
    for variant in ("before", "after"):
        if variant == "before":
            X, f = np.asarray(ds.embeddings, np.float32), (lambda t: t)
        else:
            X, f = embed_texts(norm.transform(texts), emb, progress=False), norm
        knn = KNNRouter(k=k, weighting="similarity").fit(X[tr], S[tr], C[tr], model_names=names)
        sh, ch = knn.predict(X[te])
        auc = curve_from_predictions(sh, ch, ts, tc, cost_scale(tc)).auc
        lam = operating_lambda(knn, X[ca], S[ca], C[ca], lams)
        base = knn.route(X[te], lam)
        row: dict[str, Any] = {"dataset": ds.name, "seed": seed, "kind": "flips", "variant": variant, "k": k,
                               "auc": float(auc), "lam": lam, "n_test": int(te.size)}
        for kind in KINDS:
            Xe = emb.encode([f(t) for t in edited[kind]], progress=False)
            row[kind] = float((knn.route(Xe, lam) != base).mean())
        row["mean"] = float(np.mean([row[kind] for kind in KINDS]))
        rows.append(row)
        if variant == "after":
            rows += coverage_rows(knn, ds, X, ca, te, seed)
    return rows


def _ms(v: list[float], scale: float = 100.0) -> str:
    return f"{scale * np.mean(v):.1f}"


def summary(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fl = [r for r in rows if r["kind"] == "flips"]
    cov = [r for r in rows if r["kind"] == "coverage"]
    out = ["Coverage of the per-decision bounds on the test split (mean over seeds; score | cost; far = share "
           "of test prompts without a bound):", "",
           "| dataset | 0/1 scores | " + " | ".join(f"level {lv:g}: score | cost" for lv in LEVELS)
           + " | far (0.9) | score width (0.9) |",
           "|---|---|" + "---|---|" * len(LEVELS) + "---|---|"]
    for d in [*names, "all"]:
        sel = [r for r in cov if d == "all" or r["dataset"] == d]
        cells = []
        for lv in LEVELS:
            s = [r for r in sel if r["level"] == lv]
            cells += [_ms([r["score_coverage"] for r in s]), _ms([r["cost_coverage"] for r in s])]
        s9 = [r for r in sel if r["level"] == 0.9]
        binary = "yes" if all(r["binary"] for r in sel) else "no" if not any(r["binary"] for r in sel) else "mixed"
        out.append(f"| {d} | {binary} | " + " | ".join(cells) + f" | {_ms([r['far'] for r in s9])}% | "
                   f"{np.mean([r['score_width'] for r in s9]):.2f} |")
    out += ["", "Decisions changed by each edit at the operating lambda, % of test prompts (before -> after), and "
            "test AUC (mean +- seed std):", "",
            "| dataset | " + " | ".join(KINDS) + " | mean | AUC before | AUC after | within 1 std |",
            "|---|" + "---|" * len(KINDS) + "---|---|---|---|"]
    for d in [*names, "all"]:
        b = [r for r in fl if r["variant"] == "before" and (d == "all" or r["dataset"] == d)]
        a = [r for r in fl if r["variant"] == "after" and (d == "all" or r["dataset"] == d)]
        cells = [f"{_ms([r[kd] for r in b])} -> {_ms([r[kd] for r in a])}" for kd in [*KINDS, "mean"]]
        if d == "all":
            out.append(f"| {d} | " + " | ".join(cells) + " | | | |")
            continue
        ab, aa = [r["auc"] for r in b], [r["auc"] for r in a]
        sd = float(np.std(ab, ddof=1)) if len(ab) > 1 else math.nan
        ok = abs(np.mean(aa) - np.mean(ab)) <= sd
        out.append(f"| {d} | " + " | ".join(cells) + f" | {np.mean(ab):.2f} +- {sd:.2f} | "
                   f"{np.mean(aa):.2f} +- {np.std(aa, ddof=1) if len(aa) > 1 else math.nan:.2f} | "
                   f"{'yes' if ok else 'no'} ({np.mean(aa) - np.mean(ab):+.2f}) |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(names))
    for j, lv in enumerate(LEVELS):
        cov = [np.mean([r["score_coverage"] for r in rows if r["kind"] == "coverage" and r["dataset"] == d
                        and r["level"] == lv]) for d in names]
        axes[0].bar(x + (j - 1) * 0.27, cov, 0.27, label=f"level {lv:g}")
        axes[0].hlines(lv, x[0] - 0.5, x[-1] + 0.5, colors=f"C{j}", linestyles="--", lw=1)
    axes[0].set_ylim(0.6, 1.0)
    axes[0].set_title("score bounds: test coverage vs stated level", fontsize=10)
    for j, v in enumerate(("before", "after")):
        fl = [100 * np.mean([r["mean"] for r in rows if r["kind"] == "flips" and r["dataset"] == d
                             and r["variant"] == v]) for d in names]
        axes[1].bar(x + (j - 0.5) * 0.4, fl, 0.4, label=v)
    axes[1].axhline(5, color="k", ls="--", lw=1, label="5%")
    axes[1].set_title("decisions changed by an edit (mean over the six edits), %", fontsize=10)
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    from experiments.guarantees import datasets

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--only", default=None, help="comma-separated dataset names")
    p.add_argument("--out", default=None, help="JSON lines: flips per (dataset, seed, variant), coverage per level")
    p.add_argument("--plot", default=None, help="PNG of coverage and flip rates")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for ds in datasets():
        if a.only and ds.name not in a.only.split(","):
            continue
        texts = texts_of(ds)
        for seed in range(a.seeds):
            rows += one_run(ds, texts, seed, a.k)
        print(f"{ds.name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if a.plot:
        plot(rows, a.plot)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
