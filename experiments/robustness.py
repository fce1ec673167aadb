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
The edits apply to the text the user writes (after the shared few-shot prefix). Reported beside them, not in
the mean: ``typo1_nonword`` / ``typo2_nonword``, the same typos restricted to what the issue calls a
meaning-preserving edit: each typo changes the text and does not make another English word (``four`` ->
``for`` is a different question; the word list is pyspellchecker's, independent of the data and the router).
``--norm-versions 1`` also measures the first normaliser (variant ``after_v1``). A flip is a test prompt whose
routed model at the operating lambda differs from the unedited prompt's. AUC: the test curve's (exact
breakpoints, non-decreasing convex hull).

**Coverage.** The ``after`` router's bounds (:mod:`knnroute.production.bounds`) are calibrated on the
calibration prompts at each level in ``LEVELS``; on the test prompts, coverage is the share of observed
(prompt, model) cells whose realised score (cost) lies in the bound, among prompts with a bound (not
``far``); ``far`` is the share of test prompts without one.

    HF_HUB_OFFLINE=1 python -m experiments.robustness --norm-versions 1 --out experiments/robustness.jsonl \
        --plot docs/robustness.png
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
NONWORD = ("typo1_nonword", "typo2_nonword")  # the typos as the issue defines them (see _typo), reported apart
LEVELS = (0.8, 0.9, 0.95)
_WORD3 = re.compile(r"[A-Za-z]{3,}")
_TRIES = 50


def english_words() -> frozenset[str]:
    """An English word list independent of the datasets and of the router: pyspellchecker's (about 160,000
    words from subtitles' frequencies; ``pip install knnroute[eval]``), lower case."""
    import gzip
    from importlib.resources import files

    try:
        res = files("spellchecker") / "resources" / "en.json.gz"
    except ModuleNotFoundError as e:
        raise SystemExit("the non-word typo edits need pyspellchecker: pip install 'knnroute[eval]'") from e
    return frozenset(json.loads(gzip.decompress(res.read_bytes())))


def _typo(t: str, rng: np.random.Generator, n: int, words: frozenset[str] | None = None) -> str:
    """``n`` typos, each a letter of a word of 3+ letters swapped with the next, dropped or doubled.

    ``words`` None: as first measured, a typo may leave the text unchanged (a swap of two equal letters) or make
    another English word (``four`` -> ``for``, ``slept`` -> ``sept``), which is an edit of the meaning, not a
    typo. With a word list: each typo changes the text and leaves a word not in the list (tried up to 50 times;
    a text with no such typo gets fewer)."""
    for _ in range(n):
        found = list(_WORD3.finditer(t))
        if not found:
            return t
        for _try in range(_TRIES if words is not None else 1):
            s, e = found[int(rng.integers(len(found)))].span()
            i, op = int(rng.integers(s, e - 1)), int(rng.integers(3))
            t2 = (t[:i] + t[i + 1] + t[i] + t[i + 2:] if op == 0 else t[:i] + t[i + 1:] if op == 1
                  else t[:i] + t[i] + t[i:])
            if words is None:
                t = t2
            elif t2 != t and t2[s:e + (op == 2) - (op == 1)].lower() not in words:
                t = t2
                break
    return t


def edit(t: str, kind: str, rng: np.random.Generator, words: frozenset[str] | None = None) -> str:
    """``t`` with one meaning-preserving edit of ``kind`` (see the module docstring); ``words``: the English
    word list for the ``*_nonword`` typos."""
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
    if kind in NONWORD:
        if words is None:
            raise ValueError(f"edit {kind!r} needs the English word list (english_words())")
        return _typo(t, rng, 1 if kind == "typo1_nonword" else 2, words)
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


def one_run(ds: Any, texts: list[str], seed: int, k: int = 20, words: frozenset[str] | None = None,
            versions: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Rows of one seed: ``before``, ``after`` (the default normaliser version) and ``after_v<N>`` for each
    other normaliser version in ``versions``; the ``*_nonword`` typos too when ``words`` is given."""
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
    if words is not None:  # their own random stream: the six edits stay those first measured
        rng_w = np.random.default_rng(20_000 + seed)
        edited |= {kind: [edit(texts[i], kind, rng_w, words) for i in te] for kind in NONWORD}
    norms = {"after": TextNormaliser.fit([texts[i] for i in tr])}
    norms |= {f"after_v{v}": TextNormaliser.fit([texts[i] for i in tr], v) for v in versions
              if v != norms["after"].version}
    ts, tc = fill_missing(S[te], C[te])
    lams = lambda_grid(cost_scale(C[tr]))
    rows: list[dict[str, Any]] = []
    for variant in ("before", *norms):
        if variant == "before":
            X, f = np.asarray(ds.embeddings, np.float32), (lambda t: t)
        else:
            norm = norms[variant]
            X, f = embed_texts(norm.transform(texts), emb, progress=False), norm
        knn = KNNRouter(k=k, weighting="similarity").fit(X[tr], S[tr], C[tr], model_names=names)
        sh, ch = knn.predict(X[te])
        auc = curve_from_predictions(sh, ch, ts, tc, cost_scale(tc)).auc
        lam = operating_lambda(knn, X[ca], S[ca], C[ca], lams)
        base = knn.route(X[te], lam)
        row: dict[str, Any] = {"dataset": ds.name, "seed": seed, "kind": "flips", "variant": variant, "k": k,
                               "auc": float(auc), "lam": lam, "n_test": int(te.size)}
        if variant != "before":
            row["norm_version"] = norms[variant].version
        for kind in edited:
            Xe = emb.encode([f(t) for t in edited[kind]], progress=False)
            row[kind] = float((knn.route(Xe, lam) != base).mean())
        row["mean"] = float(np.mean([row[kind] for kind in KINDS]))
        rows.append(row)
        if variant == "after":
            rows += coverage_rows(knn, ds, X, ca, te, seed)
    return rows


def _ms(v: list[float], scale: float = 100.0) -> str:
    return f"{scale * np.mean(v):.1f}"


def summary(rows: list[dict[str, Any]], variant: str = "after", coverage: bool = True) -> str:
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fl = [r for r in rows if r["kind"] == "flips"]
    cov = [r for r in rows if r["kind"] == "coverage"]
    out: list[str] = []
    if coverage:
        out += ["Coverage of the per-decision bounds on the test split (mean over seeds; score | cost; far = share "
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
            binary = ("yes" if all(r["binary"] for r in sel) else "no" if not any(r["binary"] for r in sel)
                      else "mixed")
            out.append(f"| {d} | {binary} | " + " | ".join(cells) + f" | {_ms([r['far'] for r in s9])}% | "
                       f"{np.mean([r['score_width'] for r in s9]):.2f} |")
        out.append("")
    kinds = [*KINDS, "mean"] + [kd for kd in NONWORD if all(kd in r for r in fl)]
    out += ["Decisions changed by each edit at the operating lambda, % of test prompts (before -> "
            f"{variant}; mean: of the six edits), and test AUC (mean +- seed std):", "",
            "| dataset | " + " | ".join(kinds) + " | AUC before | AUC after | within 1 std |",
            "|---|" + "---|" * len(kinds) + "---|---|---|"]
    for d in [*names, "all"]:
        b = [r for r in fl if r["variant"] == "before" and (d == "all" or r["dataset"] == d)]
        a = [r for r in fl if r["variant"] == variant and (d == "all" or r["dataset"] == d)]
        cells = [f"{_ms([r[kd] for r in b])} -> {_ms([r[kd] for r in a])}" for kd in kinds]
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
    fig, axes = plt.subplots(1, 3, figsize=(17, 4))
    x = np.arange(len(names))
    for j, lv in enumerate(LEVELS):
        cov = [np.mean([r["score_coverage"] for r in rows if r["kind"] == "coverage" and r["dataset"] == d
                        and r["level"] == lv]) for d in names]
        axes[0].bar(x + (j - 1) * 0.27, cov, 0.27, label=f"level {lv:g}")
        axes[0].hlines(lv, x[0] - 0.5, x[-1] + 0.5, colors=f"C{j}", linestyles="--", lw=1)
    axes[0].set_ylim(0.6, 1.0)
    axes[0].set_title("score bounds: test coverage vs stated level", fontsize=10)
    fl = [r for r in rows if r["kind"] == "flips"]
    variants = [v for v in ("before", "after_v1", "after") if any(r["variant"] == v for r in fl)]
    label = {"before": "raw text", "after_v1": "normaliser v1", "after": "normaliser (default)"}
    w = 0.8 / len(variants)
    for j, v in enumerate(variants):
        m = [100 * np.mean([r["mean"] for r in fl if r["dataset"] == d and r["variant"] == v]) for d in names]
        axes[1].bar(x + (j - (len(variants) - 1) / 2) * w, m, w, label=label[v])
    axes[1].set_title("decisions changed by an edit (mean over the six edits), %", fontsize=10)
    bars = [(v, kd) for v in variants if v != "before" for kd in ("typo2", "typo2_nonword")
            if all(kd in r for r in fl)]
    w = 0.8 / max(len(bars), 1)
    for j, (v, kd) in enumerate(bars):
        m = [100 * np.mean([r[kd] for r in fl if r["dataset"] == d and r["variant"] == v]) for d in names]
        axes[2].bar(x + (j - (len(bars) - 1) / 2) * w, m, w, label=f"{label[v]}: {kd}")
    axes[2].set_title("decisions changed by two typos, % (after normalisation)", fontsize=10)
    for ax in axes[1:]:
        ax.axhline(5, color="k", ls="--", lw=1, label="5%")
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
    p.add_argument("--norm-versions", default="", help="comma-separated older TextNormaliser versions to measure "
                   "too (variant after_v<N>), e.g. 1")
    p.add_argument("--no-nonword", action="store_true", help="skip the non-word typo edits (no pyspellchecker)")
    p.add_argument("--rows", default=None, help="JSON lines from an earlier --out: summarise (and --plot) them, "
                   "measure nothing")
    a = p.parse_args(argv)
    if a.rows:
        _report([json.loads(line) for line in Path(a.rows).read_text().splitlines() if line.strip()], a.plot)
        return 0
    versions = tuple(int(v) for v in a.norm_versions.split(",") if v)
    words = None if a.no_nonword else english_words()
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for ds in datasets():
        if a.only and ds.name not in a.only.split(","):
            continue
        texts = texts_of(ds)
        for seed in range(a.seeds):
            rows += one_run(ds, texts, seed, a.k, words, versions)
        print(f"{ds.name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _report(rows, a.plot)
    return 0


def _report(rows: list[dict[str, Any]], plot_path: str | None) -> None:
    """The plot (when asked) and the summary tables: the main one, then one per extra variant."""
    if plot_path:
        plot(rows, plot_path)
    print(summary(rows))
    for v in sorted({r.get("variant", "before") for r in rows} - {"before", "after"}):
        print(f"\n{v}:\n" + summary(rows, v, coverage=False))


if __name__ == "__main__":
    sys.exit(main())
