"""Cost-quality plots: every router's points and hull, with the Oracle, Best-single and Random references.

matplotlib is imported inside :func:`plot_dataset` with the Agg backend (no display needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.evaluate.curves import Curve

__all__ = ["CAPTION", "label_offsets", "plot_dataset", "safe_filename"]

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
