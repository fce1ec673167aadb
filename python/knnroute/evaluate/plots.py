"""Cost-quality plots: every router's points and hull, with the Oracle, Best-single and Random references.

matplotlib is imported inside :func:`plot_dataset` with the Agg backend (no display needed).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.evaluate.curves import Curve

__all__ = ["CAPTION", "SAVINGS_CAPTION", "label_offsets", "plot_dataset", "plot_savings", "safe_filename"]

_REFERENCE_STYLE = {
    "oracle": {"color": "black", "linestyle": "--", "linewidth": 1.6},
    "best-single": {"color": "0.45", "linestyle": ":", "linewidth": 1.8},
}


def safe_filename(name: str) -> str:
    """A dataset name as a file stem (``routerbench/arc_challenge`` -> ``routerbench__arc_challenge``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "dataset"


def _hull_xy(cv: Curve, x_end: float, dense: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The hull as a polyline to ``x_end``; ``dense`` samples each segment so a log axis draws it true."""
    x = np.concatenate([cv.hull_cost / cv.c_max, [max(x_end, cv.hull_cost[-1] / cv.c_max)]])
    y = np.concatenate([cv.hull_score, [cv.hull_score[-1]]])
    if dense and x.size > 1:
        t = np.linspace(0.0, 1.0, 40)
        xs = np.concatenate([x[i] + (x[i + 1] - x[i]) * t for i in range(x.size - 1)])
        ys = np.concatenate([y[i] + (y[i + 1] - y[i]) * t for i in range(y.size - 1)])
        return xs, ys
    return x, y


def label_offsets(
    points: Sequence[tuple[float, float]], widths: Sequence[float], height: float, gap: float = 2.0
) -> list[float]:
    """Vertical offsets (pixels) that keep text labels from overlapping.

    Each label starts ``gap`` pixels right of and above its point (pixel coordinates, y up), ``widths[i]``
    wide and ``height`` tall; labels are placed from the lowest point up, and one that would overlap an
    already placed label moves up just past it. Returns the offset of each label's bottom from its point.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0]))
    placed: list[tuple[float, float, float, float]] = []  # x0, x1, y0, y1
    offsets = [gap] * len(points)
    for i in order:
        x0 = points[i][0] + gap
        x1 = x0 + widths[i]
        y0 = points[i][1] + gap
        moved = True
        while moved:
            moved = False
            for a0, a1, b0, b1 in placed:
                if x0 < a1 and a0 < x1 and y0 < b1 and b0 < y0 + height:
                    y0 = b1 + 0.5
                    moved = True
        placed.append((x0, x1, y0, y0 + height))
        offsets[i] = y0 - points[i][1]
    return offsets


def _label_singles(ax: Any, names: Sequence[str], xs: Sequence[float], ys: Sequence[float]) -> None:
    """Single-model names beside their crosses, moved apart (with a leader line) where they would overlap."""
    fig = ax.figure
    px = ax.transData.transform(np.column_stack([xs, ys]))
    fontsize = 6.0
    height = fontsize * fig.dpi / 72.0 * 1.15
    widths = [len(n) * fontsize * fig.dpi / 72.0 * 0.6 for n in names]
    offsets = label_offsets([(float(a), float(b)) for a, b in px], widths, height)
    for name, x, y, off in zip(names, xs, ys, offsets, strict=True):
        ax.annotate(
            name, (x, y), fontsize=fontsize, color="0.3", xytext=(2.0, off), textcoords="offset pixels",
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.4} if off > 2.5 else None,
        )


def _draw(ax: Any, curves: Mapping[str, Curve], x_end: float, log: bool,
          mean_auc: Mapping[str, tuple[float, float]] | None = None, seed_label: str = "") -> None:
    import matplotlib.pyplot as plt

    routers = [
        r for r in curves if r not in ("oracle", "best-single", "random") and not r.startswith("single:")
    ]
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(routers):
        cv = curves[name]
        col = cmap(i % 10)
        ax.scatter(cv.cost / cv.c_max, cv.score, s=6, color=col, alpha=0.35, linewidths=0)
        hx, hy = _hull_xy(cv, x_end, dense=log)
        ax.plot(hx, hy, color=col, linewidth=1.8, label=_legend(name, cv, mean_auc, seed_label))
    for name, style in _REFERENCE_STYLE.items():
        if name in curves:
            cv = curves[name]
            hx, hy = _hull_xy(cv, x_end, dense=log)
            ax.plot(hx, hy, label=_legend(name, cv, mean_auc, seed_label), **style)
    singles = [(n, cv) for n, cv in curves.items() if n.startswith("single:")]
    sx = [cv.cost[0] / cv.c_max for _, cv in singles]
    sy = [cv.score[0] for _, cv in singles]
    if singles:
        ax.scatter(sx, sy, marker="x", s=36, color="0.25", label="single models", zorder=3)
    if "random" in curves:
        cv = curves["random"]
        ax.scatter(
            cv.cost / cv.c_max,
            cv.score,
            marker="o",
            s=14,
            color="tab:red",
            alpha=0.6,
            label=f"random ({cv.score.size} seeds)",
            zorder=3,
        )
    ax.axvline(1.0, color="0.8", linewidth=0.8, zorder=0)
    if log:
        pos = np.concatenate([cv.cost[cv.cost > 0] / cv.c_max for cv in curves.values()] or [np.ones(1)])
        ax.set_xscale("log")
        ax.set_xlim(max(float(pos.min()) / 1.5, 1e-6), x_end * 1.3)
    else:
        ax.set_xlim(0.0, x_end * 1.02)
    ax.set_ylim(0.0, 102.0)
    if singles:  # after the limits: label placement works in pixels
        _label_singles(ax, [n.split(":", 1)[1].split("/")[-1][:22] for n, _ in singles], sx, sy)
    ax.set_xlabel("mean cost / c_max  (c_max = mean cost of the most expensive model)", fontsize=8)
    ax.set_ylabel("mean score (x100)")
    ax.grid(True, alpha=0.25)


def _legend(name: str, cv: Curve, mean_auc: Mapping[str, tuple[float, float]] | None, seed_label: str) -> str:
    """``knn-100 (AUC 70.02 ± 1.19; seed 0: 68.61)``: the table's mean ± std first, then the drawn seed."""
    seed = seed_label or "drawn"
    if mean_auc and name in mean_auc:
        m, sd = mean_auc[name]
        return f"{name} (AUC {m:.2f} ± {sd:.2f}; {seed}: {cv.auc:.2f})"
    return f"{name} (AUC {cv.auc:.2f}{f', {seed_label}' if seed_label else ''})"


CAPTION = (
    "Lines: each router's non-decreasing convex hull (points: its curve over lambda); dashed: Oracle; "
    "dotted: Best-single (hull of the single models). x: one model always used; red dots: random router "
    "repeats.\nLegend: AUC = area under the hull over cost / c_max in [0, 1], scores x100; mean ± std over "
    "the split seeds as in the table, then the drawn seed's own AUC."
)


def plot_dataset(
    dataset: str,
    curves: Mapping[str, Curve],
    out_dir: str | Path,
    *,
    model_names: Sequence[str] = (),
    generated: bool = False,
    subtitle: str = "",
    mean_auc: Mapping[str, tuple[float, float]] | None = None,
    seed_label: str = "",
) -> Path:
    """Draw one dataset's curves to ``out_dir/<dataset>.png`` and return the path.

    Parameters
    ----------
    curves : mapping router name -> Curve
        One seed's curves: ``oracle``, ``best-single``, ``random`` (its repeats' points), ``single:<model>``
        and the routers'. Costs are drawn normalised by each curve's ``c_max``; scores x100.
    mean_auc : mapping router name -> (mean, std), optional
        The table's AUC over the split seeds; the legend shows it first, then the drawn seed's own AUC,
        so the plot and the table it accompanies agree.
    seed_label : str
        Which seed is drawn (e.g. ``"seed 0"``), named in the legend.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{safe_filename(dataset)}.png"
    xs = [cv.cost / cv.c_max for cv in curves.values()]
    x_end = max(1.0, max((float(x.max()) for x in xs if x.size), default=1.0))
    fig, axes = plt.subplots(1, 2, figsize=(13.0, 5.6), dpi=110, gridspec_kw={"width_ratios": [1.15, 1.0]})
    try:
        for ax, log in zip(axes, (False, True), strict=False):
            _draw(ax, curves, x_end, log, mean_auc, seed_label)
        lin, lg = axes
        lin.set_title("linear cost (the AUC's axis; area left of 1 counts)", fontsize=9)
        lg.set_title("log cost (detail of the cheap end)", fontsize=9)
        lin.legend(loc="lower right", fontsize=7, framealpha=0.9)
        title = dataset + ("  [GENERATED demo data, not real results]" if generated else "")
        fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
        fig.tight_layout(rect=(0.0, 0.06, 1.0, 1.0))
        fig.text(0.01, 0.01, CAPTION, fontsize=7, color="0.25", ha="left", va="bottom")
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


SAVINGS_TOP = 250.0  # panel (a)'s y limit at most (% of the best model's cost)

SAVINGS_CAPTION = (
    "Read off each router's hull (the curve the AUC integrates; points between two lambdas are reached by "
    "routing a share of the prompts at each); bars: mean over the split seeds, whiskers: std.\n"
    "(a) cost at which the hull first reaches the best single model's mean test score, as a share of that "
    "model's cost (below the 100% line = the same quality for less; bars cut at the top are labelled with their "
    "value); 'never' = no seed reached it, "
    "'k/n' = only k of n seeds did.\n"
    "(b) the hull's score at the cheapest model's mean cost minus that model's own score (x100 points)."
)


def plot_savings(summary: Sequence[Mapping[str, Any]], out_dir: str | Path, *, subtitle: str = "") -> Path:
    """Draw ``out_dir/savings.png`` over every dataset of a run (:func:`knnroute.evaluate.report.summarise`
    rows with the savings fields; single-model rows left out): (a) the cost share at which each router
    matches the best single model's quality, grouped by dataset, 'never' marked, a line at 100%; (b) the
    quality at the cheapest model's cost minus that model's."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r for r in summary if "match_cost_share_mean" in r and not str(r["router"]).startswith("single:")]
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    routers = list(dict.fromkeys(str(r["router"]) for r in rows))
    cell = {(str(r["dataset"]), str(r["router"])): r for r in rows}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "savings.png"
    n_ds, n_r = max(1, len(datasets)), max(1, len(routers))
    width = min(40.0, max(11.0, 0.16 * n_ds * n_r + 3.0))
    fig, (ax_a, ax_b) = plt.subplots(2, 1, figsize=(width, 9.0), dpi=110, sharex=True)
    cmap = plt.get_cmap("tab10" if n_r <= 10 else "tab20")
    bar_w = 0.8 / n_r
    x = np.arange(n_ds, dtype=np.float64)

    def stat(ds: str, name: str, key: str) -> tuple[float, float]:
        r = cell.get((ds, name))
        if r is None:
            return float("nan"), float("nan")
        return float(r.get(f"{key}_mean", float("nan"))), float(r.get(f"{key}_std", float("nan")))

    shares = [100.0 * stat(d, n, "match_cost_share")[0] for d in datasets for n in routers]
    finite = [v for v in shares if np.isfinite(v)]
    # the interesting range is around 100%: a share far above it is cut at the top and labelled there
    top = max(120.0, min(SAVINGS_TOP, 1.12 * max(finite, default=100.0)))
    labelled = n_ds * n_r <= 80  # value labels on the bars while they fit
    try:
        for j, name in enumerate(routers):
            col = cmap(j % cmap.N)
            xs = x - 0.4 + bar_w * (j + 0.5)
            for ax, key, scale in ((ax_a, "match_cost_share", 100.0), (ax_b, "score_at_cheapest_gain", 1.0)):
                ms = np.array([stat(d, name, key) for d in datasets], dtype=np.float64).reshape(-1, 2) * scale
                ok = np.isfinite(ms[:, 0])
                ax.bar(xs[ok], ms[ok, 0], bar_w * 0.92, yerr=np.nan_to_num(ms[ok, 1]), color=col,
                       error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.3"}, zorder=2)
                if labelled:
                    for xi, v, sd in zip(xs[ok], ms[ok, 0], np.nan_to_num(ms[ok, 1]), strict=True):
                        text = f"{v:.0f}%" if ax is ax_a else f"{round(v, 1) + 0.0:+.1f}"
                        if ax is ax_a and v + sd > top:
                            continue  # labelled below, at the top of the axis
                        up = round(v, 1) >= 0
                        ax.annotate(text, (xi, v + sd if up else v - sd), xytext=(0, 2 if up else -2),
                                    textcoords="offset points",
                                    ha="center", va="bottom" if up else "top", fontsize=6, color="0.2",
                                    rotation=90 if bar_w < 0.12 else 0, zorder=4,
                                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.7})
            for xi, v in zip(xs, [100.0 * stat(d, name, "match_cost_share")[0] for d in datasets], strict=True):
                if np.isfinite(v) and v > top * 0.9:  # cut at the top: say how high
                    ax_a.text(xi, top * 0.88, f"{v:.0f}%", rotation=90, ha="center", va="top", fontsize=7,
                              color="0.1", zorder=4,
                              bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
            for i, ds in enumerate(datasets):  # 'never' and partial matches on panel (a)
                r = cell.get((ds, name))
                if r is None:
                    continue
                n, never = int(r.get("n_seeds", 0)), int(r.get("match_never", 0))
                if never >= n or not np.isfinite(stat(ds, name, "match_cost_share")[0]):
                    ax_a.bar(xs[i], top, bar_w * 0.92, color="none", edgecolor=col, hatch="///",
                             linewidth=0.6, zorder=1)
                    ax_a.text(xs[i], top * 0.5, "never", rotation=90, ha="center", va="center",
                              fontsize=7, color="0.15", zorder=3,
                              bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
                elif never:
                    ax_a.text(xs[i], top * 0.97, f"{n - never}/{n}\nseeds", ha="center", va="top",
                              fontsize=6, color="0.15", zorder=3)
        handles: list[Any] = [Patch(facecolor=cmap(j % cmap.N), label=name) for j, name in enumerate(routers)]
        handles.append(Patch(facecolor="none", edgecolor="0.3", hatch="///", label="never matches"))
        handles.append(Line2D([], [], color="black", linewidth=1.0, linestyle="--", label="100% = best's cost"))
        ax_a.axhline(100.0, color="black", linewidth=1.0, linestyle="--", zorder=3)
        ax_a.set_ylim(0.0, top)
        ax_a.set_ylabel("cost to match the best model\n(% of its cost; lower is better)", fontsize=9)
        ax_a.set_title("(a) cost share needed to match the best single model's quality", fontsize=10, loc="left")
        gains = [stat(d, n, "score_at_cheapest_gain") for d in datasets for n in routers]
        lo = min([0.0, *(m - np.nan_to_num(s) for m, s in gains if np.isfinite(m))])
        hi = max([0.0, *(m + np.nan_to_num(s) for m, s in gains if np.isfinite(m))])
        pad = max(1.0, 0.1 * (hi - lo))
        ax_b.set_ylim(lo - pad, hi + pad)
        ax_b.axhline(0.0, color="black", linewidth=1.0, zorder=3)
        ax_b.set_ylabel("score at the cheapest model's cost\nminus its score (x100; higher is better)",
                        fontsize=9)
        ax_b.set_title("(b) quality gained at the cheapest model's cost", fontsize=10, loc="left")
        ax_b.set_xticks(x)
        labels = []
        for ds in datasets:
            r0 = next(r for r in rows if r["dataset"] == ds)
            best = str(r0.get("best_model", "?")).split("/")[-1][:18]
            cheap = str(r0.get("cheapest_model", "?")).split("/")[-1][:18]
            labels.append(f"{ds.split('/')[-1][:26]}\nbest: {best}\ncheapest: {cheap}")
        ax_b.set_xticklabels(labels, fontsize=7.5)
        for ax in (ax_a, ax_b):
            ax.grid(True, axis="y", alpha=0.3, zorder=0)
            ax.set_xlim(-0.5, n_ds - 0.5)
            for i in range(1, n_ds):
                ax.axvline(i - 0.5, color="0.85", linewidth=0.8, zorder=0)
        ax_a.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="router",
                    title_fontsize=8, frameon=False)
        gen = any(bool(r.get("generated")) for r in rows)
        title = "Savings against the best and the cheapest single model"
        title += "  [GENERATED demo data, not real results]" if gen else ""
        fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
        chars = int(width * 110 / 6.2)  # about 6 px per character at fontsize 7, dpi 110
        caption = "\n".join(textwrap.fill(p, chars) for p in SAVINGS_CAPTION.split("\n"))
        fig.tight_layout(rect=(0.0, 0.03 + 0.018 * caption.count("\n"), 1.0, 1.0))
        fig.text(0.01, 0.01, caption, fontsize=7, color="0.25", ha="left", va="bottom")
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
