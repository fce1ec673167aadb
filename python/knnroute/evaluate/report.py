"""Tables a person can read, and JSON with every number and the conventions behind it.

JSON layout (``write_json``)::

    {
      "conventions": {...},            # how every number was computed (CONVENTIONS + run settings)
      "results": [ {dataset, router, seed, auc, gain, ...}, ... ],   # flat: pandas.DataFrame(results)
      "summary": [ {dataset, router, n_seeds, auc_mean, auc_std, gain_mean, gain_std, ...,
                    match_cost_share_mean, ..., match_never, best_model, cheapest_model}, ... ],
      "curves": [ {dataset, router, seed, c_max, auc, hull_cost, hull_score, [cost, score, lams]}, ... ],
      "tuning": [ {dataset, seed, k, weighting, temperature, shrinkage, val_auc}, ... ],
      "datasets": [ {name, n, n_models, models, generated, source}, ... ],
      "diagnostics": [ ... ],          # when requested
      "meta": {...}                    # versions, backend, embedder, runtime
    }
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONVENTIONS", "format_markdown", "format_matrix", "format_notes", "format_savings", "format_savings_notes",
    "format_table", "format_timing", "summarise", "to_jsonable", "write_json",
]

CONVENTIONS: dict[str, str] = {
    "score": "true score on [0, 1] x100; a missing score counts as 0",
    "cost": "true cost in USD per query; a missing cost counts as that model's mean observed test cost",
    "curve": (
        "for each lambda every test prompt goes to argmax_m s_hat - lambda c_hat (ties: cheaper model, then "
        "lower index); a point is (mean true cost, mean true score x100) over the test prompts"
    ),
    "lambda": (
        "exact: every breakpoint of the per-prompt upper envelopes (the limit of ever denser grids); "
        "grid(L): the given normalised lambdas divided by c_max"
    ),
    "hull": (
        "upper convex hull of the points and the null router (0, 0), cut after its highest score and "
        "extended flat to the right (RouterBench's non-decreasing convex hull)"
    ),
    "c_max": "largest mean test cost of any single model (always using the most expensive model)",
    "auc": "area under the hull over cost / c_max in [0, 1] (beyond c_max clipped), so AUC is in [0, 100]",
    "oracle": "sweep of the true utilities (ties to the cheaper model)",
    "random": (
        "uniform model per prompt; one point per repeat, hulled with (0, 0): AUC = s (1 - c/(2 c_max)); "
        "mean over 10 repeats"
    ),
    "best-single": "hull of the single models' (mean cost, mean score) points",
    "single:<model>": "hull of one model's point with (0, 0)",
    "gain": "(AUC - AUC_best_single) / (AUC_oracle - AUC_best_single), per seed",
    "split": (
        "seeded random 70/10/20 train/val/test unless the data ships a split; with a shipped train/test "
        "split the test is used as is and validation is a seeded 1/8 of the shipped train"
    ),
    "support": "kNN routers search the train split only; validation is used for tuning only",
    "tuning": (
        "knn-tuned: k in {5,10,20,50,100,200} (capped at n_train - 1) x weighting in {uniform, similarity, "
        "softmax T in {0.01,0.05,0.1}} x shrinkage toward the training column means in {0,1,5,20,100,1e6} "
        "(1e6 = the best-single fallback: constant predictions), chosen by the AUC over the validation "
        "prompts plus the training prompts routed leave-one-out (ties: earlier); never the test set. Where "
        "the data has prompt texts and input prices, also the cost model 'input+knn' (the prompt's own "
        "input tokens x input price + the neighbours' remaining cost) against plain 'knn'"
    ),
    "selection-curves": "selection routers: curve over a 101-point dense lambda grid (one classifier per label vector)",
    "timing": (
        "fit_seconds: fit incl. tuning; route_seconds: one route(X_test, 0.5/c_max) call on the whole test "
        "set (Table 3 style; fit excluded); wall clock on the machine of the run"
    ),
    "knn-tuned-lex": (
        "knn-tuned whose search also covers the hybrid similarity w cos_dense + (1 - w) cos_lexical, w in "
        "{1, 0.75, 0.5} (lexical: word 1-2-gram TF-IDF + 256-d LSA fitted on the training prompts), chosen "
        "with the kNN settings by the same tuning AUC (ties: dense); without prompt texts it is knn-tuned"
    ),
    "knn-10 / knn-100": "the paper's fixed rows: uniform mean of the k nearest training prompts (cosine)",
    "selection": (
        "appendix D: utility 100 * mean(s - lambda c) at lambda = 1.0, 0.5, 0.1 divided by c_max "
        "(sel_1, sel_0.5, sel_0.1) and their mean (sel_mean); separate from the AUC"
    ),
    "seeds": "mean +- std (population, ddof=0) over the split seeds",
    "savings": (
        "per test set: best model = highest mean test score (ties: cheaper), cheapest model = lowest mean test "
        "cost (ties: higher score). Read off each router's hull, the curve the AUC integrates (a point between "
        "two lambdas' points is reached by routing a share of the prompts at each): match_cost_share = the "
        "smallest cost at which the hull reaches the best model's score / the best model's cost (NaN = never; "
        "< 1 = the best model's quality for that share of its cost); match_saving_usd_per_1k = (best model "
        "cost - that cost) x 1000 in USD; score_at_cheapest = the hull's score x100 at the cheapest model's "
        "cost; score_at_cheapest_gain = that - the cheapest model's score. Random: mean over its repeats "
        "(NaN if any repeat never matches). Summary: mean +- std over the seeds that matched; "
        "match_never = seeds that never did"
    ),
}

_SAVINGS_KEYS = ("match_cost_share", "match_saving_usd_per_1k", "score_at_cheapest", "score_at_cheapest_gain",
                 "best_model_cost", "best_model_score", "cheapest_model_cost", "cheapest_model_score")


def to_jsonable(x: Any) -> Any:
    """NumPy scalars/arrays to Python; NaN/inf to None (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return to_jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _nan_stats(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def summarise(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, router), in first-seen order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["router"]), []).append(r)
    out = []
    for (ds, router), rs in groups.items():
        row: dict[str, Any] = {"dataset": ds, "router": router, "n_seeds": len(rs)}
        for key in ("auc", "gain", "sel_mean", "auc_oracle", "auc_best_single", "fit_seconds", "route_seconds"):
            if any(key in r for r in rs):
                m, s = _nan_stats([r.get(key, float("nan")) for r in rs])
                row[f"{key}_mean"], row[f"{key}_std"] = m, s
        if any("match_cost_share" in r for r in rs):
            for key in _SAVINGS_KEYS:
                m, s = _nan_stats([r.get(key, float("nan")) for r in rs])
                row[f"{key}_mean"], row[f"{key}_std"] = m, s
            row["match_never"] = sum(
                1 for r in rs if not math.isfinite(_num(r.get("match_cost_share", float("nan"))))
            )
            for key in ("best_model", "cheapest_model"):  # the most frequent over seeds, and every one seen
                names = [str(r[key]) for r in rs if r.get(key) is not None]
                if names:
                    row[key] = max(dict.fromkeys(names), key=names.count)
                    row[f"{key}s"] = list(dict.fromkeys(names))
        row["generated"] = bool(rs[0].get("generated", False))
        out.append(row)
    return out


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _fmt(m: float, s: float, digits: int = 2) -> str:
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def format_table(summary: Sequence[Mapping[str, Any]], singles: bool = True) -> str:
    """One block per dataset: router | AUC mean ± std | gain mean ± std | selection utility."""
    lines: list[str] = []
    by_ds: dict[str, list[Mapping[str, Any]]] = {}
    for row in summary:
        by_ds.setdefault(row["dataset"], []).append(row)
    for ds, rows in by_ds.items():
        gen = " [GENERATED demo data, not real results]" if rows[0].get("generated") else ""
        lines.append(f"{ds}{gen}  ({rows[0]['n_seeds']} seeds)")
        lines.append(f"  {'router':<28} {'AUC':>15}  {'gain':>15}  {'sel (App. D)':>15}")
        main = [r for r in rows if not str(r["router"]).startswith("single:")]
        single = [r for r in rows if str(r["router"]).startswith("single:")]
        for r in main + ([] if not singles else single):
            name = str(r["router"])
            if name.startswith("single:"):
                name = "  " + name.split(":", 1)[1].split("/")[-1]
            lines.append(
                f"  {name[:28]:<28} {_fmt(r['auc_mean'], r['auc_std']):>15}  "
                f"{_fmt(r.get('gain_mean', float('nan')), r.get('gain_std', float('nan')), 3):>15}  "
                f"{_fmt(r.get('sel_mean_mean', float('nan')), r.get('sel_mean_std', float('nan'))):>15}"
            )
        lines.append("")
    return "\n".join(lines)


def format_notes(n_seeds: int) -> str:
    """The footer printed under :func:`format_table`: every column and row name, in words."""
    spread = f"std over the {n_seeds} split seeds" if n_seeds > 1 else "0 (one seed)"
    return "\n".join([
        "columns (value ± spread = mean ± " + spread + "):",
        "  AUC   area under the router's non-decreasing cost-quality hull, cost / c_max on [0, 1], score x100;",
        "        0-100, higher is better (c_max = mean cost of always using the most expensive model)",
        "  gain  (AUC - AUC best-single) / (AUC oracle - AUC best-single): 0 = no better than a fixed choice",
        "        of models, 1 = the oracle",
        "  sel (App. D)  the paper's Appendix D selection utility: 100 x mean(score - lambda x cost / c_max)",
        "        at lambda = 1, 0.5 and 0.1, averaged (python/knnroute/evaluate/README.md)",
        "rows: oracle = the truly best model per prompt; random = a uniform model per prompt; best-single =",
        "  the hull of the single models' points (a choice that ignores the prompt); knn-K = mean outcome of",
        "  the K nearest training prompts; knn-tuned = k, weighting and shrinkage chosen on validation;",
        "  knn-tuned-lex = the same search over dense and dense + lexical (TF-IDF) similarity;",
        "  indented rows = one model always",
    ])


def format_matrix(
    summary: Sequence[Mapping[str, Any]], key: str = "auc", routers: Sequence[str] | None = None
) -> str:
    """Routers x datasets matrix of ``key`` means (compact overview; single models left out)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    names = routers or list(
        dict.fromkeys(r["router"] for r in summary if not str(r["router"]).startswith("single:"))
    )
    cell = {(r["dataset"], r["router"]): r.get(f"{key}_mean", float("nan")) for r in summary}
    w = max(10, *(min(len(d), 22) for d in datasets)) if datasets else 10
    avg = len(datasets) > 1
    head = f"{key.upper():<14}" + "".join(f"{d[-w:]:>{w + 2}}" for d in datasets)
    lines = [head + (f"{'avg':>{w + 2}}" if avg else "")]
    digits = 3 if key == "gain" else 2
    for name in names:
        vals = [cell.get((d, name), float("nan")) for d in datasets]
        if avg:  # unweighted mean over the datasets (blank when a dataset lacks this router)
            vals.append(float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else float("nan"))
        lines.append(
            f"{name[:14]:<14}"
            + "".join(f"{v:>{w + 2}.{digits}f}" if math.isfinite(v) else f"{'':>{w + 2}}" for v in vals)
        )
    return "\n".join(lines)


def format_timing(summary: Sequence[Mapping[str, Any]]) -> str:
    """Table-3 style: per router, fit time and the time to route each test set (means over seeds), summed
    over the datasets (routers that are not fitted, such as the Oracle, are left out)."""
    names = list(
        dict.fromkeys(r["router"] for r in summary if math.isfinite(r.get("route_seconds_mean", float("nan"))))
    )
    if not names:
        return ""
    lines = [f"{'TIMING':<14}{'fit s (sum)':>14}{'route s (sum)':>15}{'route s (max)':>15}"]
    for name in names:
        rows = [r for r in summary if r["router"] == name]
        fit = [r.get("fit_seconds_mean", float("nan")) for r in rows]
        route = [r.get("route_seconds_mean", float("nan")) for r in rows]
        lines.append(f"{name[:14]:<14}{np.nansum(fit):>14.3f}{np.nansum(route):>15.4f}{np.nanmax(route):>15.4f}")
    return "\n".join(lines)


def _short(name: str, width: int = 22) -> str:
    return name.split("/")[-1][:width]


def _signed(m: float, s: float, digits: int = 2) -> str:
    if not math.isfinite(m):
        return "n/a"
    m = round(m, digits) + 0.0  # no "-0.00"
    return f"{m:+.{digits}f} ± {s:.{digits}f}"


def format_savings(summary: Sequence[Mapping[str, Any]]) -> str:
    """The SAVINGS block: per dataset and router (single models left out), the cost share at which the
    router's hull matches the best single model's quality, the dollars that saves per 1,000 queries, and
    the quality the hull reaches at the cheapest model's cost against that model's own (mean ± std over
    seeds; :mod:`knnroute.evaluate.savings`). Empty when the summary has no savings fields."""
    lines: list[str] = []
    by_ds: dict[str, list[Mapping[str, Any]]] = {}
    for row in summary:
        if "match_cost_share_mean" in row and not str(row["router"]).startswith("single:"):
            by_ds.setdefault(row["dataset"], []).append(row)
    for ds, rows in by_ds.items():
        r0 = rows[0]
        best, cheap = _short(str(r0.get("best_model", "?"))), _short(str(r0.get("cheapest_model", "?")))
        best_1k = 1000.0 * r0.get("best_model_cost_mean", float("nan"))
        cheap_1k = 1000.0 * r0.get("cheapest_model_cost_mean", float("nan"))
        d = 2 if best_1k >= 1 else 3 if best_1k >= 0.1 else 5
        gen = " [GENERATED demo data]" if r0.get("generated") else ""
        lines.append(f"{ds}{gen}  ({r0['n_seeds']} seeds)")
        for role, name, key, usd in (("best", best, "best_model", best_1k), ("cheapest", cheap, "cheapest_model",
                                                                              cheap_1k)):
            others = [_short(str(n)) for n in r0.get(f"{key}s", []) if _short(str(n)) != name]
            also = f"  (most seeds; also {', '.join(others)})" if others else ""
            lines.append(
                f"  {role + ' model:':<16}{name:<22} score {r0.get(f'{key}_score_mean', float('nan')):6.2f}  "
                f"${usd:.{max(d, 3 if usd < 1 else 2)}f} / 1k queries{also}"
            )
        wm, wa, wv = 24, 24, 14  # the models are named above: the headers stay short
        lines.append(
            f"  {'router':<14} {'cost to match best':>{wm}}  {'saves / 1k queries':>20}  "
            f"{'score at cheapest cost':>{wa}}  {'vs cheapest':>{wv}}"
        )
        for r in rows:
            n, never = int(r["n_seeds"]), int(r.get("match_never", 0))
            m, s = r["match_cost_share_mean"], r["match_cost_share_std"]
            if never >= n or not math.isfinite(m):
                match, saves = "never", "-"
            else:
                match = f"{100 * m:.1f}% ± {100 * s:.1f}%" + (f" ({never}/{n} never)" if never else "")
                sm, ss = r["match_saving_usd_per_1k_mean"], r["match_saving_usd_per_1k_std"]
                sm = round(sm, d) + 0.0
                saves = f"{'-' if sm < 0 else ''}${abs(sm):.{d}f} ± {ss:.{d}f}"
            lines.append(
                f"  {str(r['router'])[:14]:<14} {match:>{wm}}  {saves:>20}  "
                f"{_fmt(r['score_at_cheapest_mean'], r['score_at_cheapest_std']):>{wa}}  "
                f"{_signed(r['score_at_cheapest_gain_mean'], r['score_at_cheapest_gain_std']):>{wv}}"
            )
        lines.append("")
    return "\n".join(lines)


def format_markdown(
    summary: Sequence[Mapping[str, Any]], savings_routers: Sequence[str] = ("knn-tuned", "knn-tuned-lex")
) -> str:
    """The README's tables (``knnroute eval --markdown PATH``) from a summary.

    1. AUC mean ± std per router (rows; single models left out) and dataset (columns), the unweighted
       average over datasets, and the pooled gain ``(avg AUC - avg best-single) / (avg oracle -
       avg best-single)`` in % (blank where a router lacks a dataset).
    2. Savings per dataset for ``savings_routers`` (those present): the best model and its cost, the cost
       share at which the router's hull matches its score (``k/n never``: seeds that never did), the USD
       saved per 1,000 queries, and the score at the cheapest model's cost against that model's.
    """
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    names = list(dict.fromkeys(r["router"] for r in summary if not str(r["router"]).startswith("single:")))
    cell = {(r["dataset"], r["router"]): r for r in summary}
    lines = ["*GENERATED demo data, not real results*", ""] if any(r.get("generated") for r in summary) else []
    lines += ["| router | " + " | ".join(datasets) + " | avg | pooled gain % |",
              "|---|" + "---|" * (len(datasets) + 2)]
    for name in names:
        rows = [cell.get((d, name)) for d in datasets]
        vals = [f"{r['auc_mean']:.2f} ± {r['auc_std']:.2f}" if r else "" for r in rows]
        avg = pooled = ""
        if all(rows):
            a = float(np.mean([r["auc_mean"] for r in rows]))  # type: ignore[index]
            b = float(np.mean([r.get("auc_best_single_mean", float("nan")) for r in rows]))  # type: ignore[union-attr]
            o = float(np.mean([r.get("auc_oracle_mean", float("nan")) for r in rows]))  # type: ignore[union-attr]
            avg = f"{a:.2f}"
            pooled = f"{100 * (a - b) / (o - b):.1f}" if math.isfinite(o - b) and o - b > 1e-12 else ""
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {avg} | {pooled} |")
    present = [n for n in savings_routers if n in names]
    if present and any("match_cost_share_mean" in r for r in summary):
        lines += ["", "| dataset | best model, $ / 1k queries | router | cost to match the best model | saves / 1k "
                  "queries | score at the cheapest model's cost (vs that model) |", "|---|---|---|---|---|---|"]
        for d in datasets:
            for name in present:
                r = cell.get((d, name))
                if r is None or "match_cost_share_mean" not in r:
                    continue
                n, never = int(r["n_seeds"]), int(r.get("match_never", 0))
                m = r["match_cost_share_mean"]
                if never >= n or m is None or not math.isfinite(m):  # None: NaN read back from JSON
                    match, saves = "never", "–"
                else:
                    match = f"{100 * m:.0f}% ± {100 * r['match_cost_share_std']:.0f}%" + (
                        f" ({never}/{n} never)" if never else "")
                    v = round(float(r["match_saving_usd_per_1k_mean"]), 3) + 0.0  # no "$-0.000"
                    saves = f"{'-' if v < 0 else ''}${abs(v):.3f}"
                best = f"{_short(str(r.get('best_model', '?')))}, ${1000 * r['best_model_cost_mean']:.3f}"
                gain = round(float(r["score_at_cheapest_gain_mean"]), 2) + 0.0  # no "-0.00"
                at_cheap = f"{r['score_at_cheapest_mean']:.2f} ({gain:+.2f})"
                lines.append(f"| {d} | {best} | {name} | {match} | {saves} | {at_cheap} |")
    return "\n".join(lines) + "\n"


def format_savings_notes() -> str:
    """The key printed under :func:`format_savings`."""
    return "\n".join([
        "key: every number is read off the router's hull, the curve the AUC integrates (a point between two",
        "  lambdas' points is reached by routing a share of the prompts at each); best model = highest mean",
        "  test score (ties: cheaper), cheapest = lowest mean test cost (ties: higher score), per seed's test set",
        "  cost to match best      the cost at which the hull first reaches the best model's score, as a share",
        "                          of that model's cost: < 100% = its quality for less (> 100%: only for more);",
        "                          never = the hull stays below it; (k/n never) = k seeds never reached it,",
        "                          left out of the mean",
        "  saves / 1k queries      the best model's cost minus that cost, USD per 1,000 queries",
        "  score at cheapest cost  the hull's score (x100) at the cheapest model's cost",
        "  vs cheapest             that minus the cheapest model's own score (> 0: better for the same money)",
    ])


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write strict JSON (NaN -> null), creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        json.dump(to_jsonable(payload), f, indent=1, allow_nan=False)
        f.write("\n")
    return p
