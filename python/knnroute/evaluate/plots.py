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

__all__ = ["plot_dataset", "safe_filename"]

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


def _draw(ax: Any, curves: Mapping[str, Curve], x_end: float, log: bool) -> None:
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
        ax.plot(hx, hy, color=col, linewidth=1.8, label=f"{name} (AUC {cv.auc:.2f})")
    for name, style in _REFERENCE_STYLE.items():
        if name in curves:
            cv = curves[name]
            hx, hy = _hull_xy(cv, x_end, dense=log)
            ax.plot(hx, hy, label=f"{name} (AUC {cv.auc:.2f})", **style)
    singles = [(n, cv) for n, cv in curves.items() if n.startswith("single:")]
    if singles:
        sx = [cv.cost[0] / cv.c_max for _, cv in singles]
        sy = [cv.score[0] for _, cv in singles]
        ax.scatter(sx, sy, marker="x", s=36, color="0.25", label="single models", zorder=3)
        for (n, _), x, y in zip(singles, sx, sy, strict=False):
            ax.annotate(
                n.split(":", 1)[1].split("/")[-1][:22],
                (x, y),
                fontsize=6,
                color="0.3",
                xytext=(3, 2),
                textcoords="offset points",
            )
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
    ax.set_xlabel("mean cost / c_max  (c_max = mean cost of the most expensive model)", fontsize=8)
    ax.set_ylabel("mean score (x100)")
    ax.grid(True, alpha=0.25)


def plot_dataset(
    dataset: str,
    curves: Mapping[str, Curve],
    out_dir: str | Path,
    *,
    model_names: Sequence[str] = (),
    generated: bool = False,
    subtitle: str = "",
) -> Path:
    """Draw one dataset's curves to ``out_dir/<dataset>.png`` and return the path.

    Parameters
    ----------
    curves : mapping router name -> Curve
        One seed's curves: ``oracle``, ``best-single``, ``random`` (its repeats' points), ``single:<model>``
        and the routers'. Costs are drawn normalised by each curve's ``c_max``; scores x100.
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
            _draw(ax, curves, x_end, log)
        lin, lg = axes
        lin.set_title("linear cost (the AUC's axis; area left of 1 counts)", fontsize=9)
        lg.set_title("log cost (detail of the cheap end)", fontsize=9)
        lin.legend(loc="lower right", fontsize=7, framealpha=0.9)
        title = dataset + ("  [GENERATED demo data, not real results]" if generated else "")
        fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
