"""Issue 29: the gateway's feedback store on real data -- bounded state over 20,000 feedbacks, and revert.

``bounded``: a router fitted on RouterBench's pooled training rows (full information) gets N feedbacks
through :class:`knnroute.gateway.feedback.FeedbackStore` (the JSON-lines log, fsync per feedback, what
``[feedback] log`` runs): each a RouterBench training or validation prompt (cycled; never a test prompt),
routed greedily at a lambda drawn from the dense grid, with that model's true outcome. Every 2,000
feedbacks: the router's rows, the router file's size after a save, one decision's time (median of 200
``route_one_detail`` calls on test prompts) and the test AUC, with ``[feedback] max_rows`` = 0 (no folding) and the
default 5,000.

``revert``: a start router (10% of the training rows), 1,000 honest bandit feedbacks from key ``good``,
then 500 from key ``evil`` with every score inverted (1 - s), then ``revert(key="evil")``: test AUC and
the test prompts' decisions (at 5 lambdas) before the attack, after it, after the revert.

    HF_HUB_OFFLINE=1 python -m bench.online_state --json docs/online-state.json --plot docs/online-state.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _data(seed: int = 0) -> dict[str, Any]:
    from knnroute.embed.prepare import prepare_data
    from knnroute.routers.curves import cost_scale, dense_lambda_grid, fill_missing

    (ds,) = prepare_data("routerbench", seed=seed, progress=False, pooled=True)
    split = np.asarray(ds.split)
    X = np.asarray(ds.embeddings, dtype=np.float32)
    S, C = np.asarray(ds.scores, dtype=np.float64), np.asarray(ds.costs, dtype=np.float64)
    tr, te = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    St, Ct = fill_missing(S[te], C[te])
    c_max = cost_scale(Ct)
    mean_c = np.nanmean(C[tr], axis=0)
    return {"X": X, "S": np.where(np.isnan(S), 0.0, S), "C": np.where(np.isnan(C), mean_c[None, :], C),
            "S_raw": S, "C_raw": C, "tr": tr, "te": te, "St": St, "Ct": Ct, "c_max": c_max,
            "grid": dense_lambda_grid(c_max, n=200), "names": list(ds.model_names)}


def _prod(D: dict[str, Any], rows: np.ndarray) -> Any:
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    knn = KNNRouter(k=min(100, len(rows))).fit(D["X"][rows], D["S_raw"][rows], D["C_raw"][rows],
                                               model_names=D["names"])
    return ProductionRouter(knn, ids=[f"fit-{i}" for i in rows])


def _feed(store: Any, D: dict[str, Any], r: int, rid: str, key: str, rng: np.random.Generator,
          invert: bool = False) -> None:
    from knnroute.gateway.feedback import Pending

    lam = float(D["grid"][rng.integers(len(D["grid"]))])
    d = store.router.core.route_one_detail(D["X"][r], lam)
    j = int(d["model"])
    store.remember(rid, Pending(D["X"][r], D["names"][j], float(D["C"][r, j]), key))
    s = float(D["S"][r, j])
    store.submit(rid, 1.0 - s if invert else s)


def _test_auc(router: Any, D: dict[str, Any]) -> float:
    from knnroute.routers.curves import curve_from_predictions

    s, c = router.predict(D["X"][D["te"]])
    return float(curve_from_predictions(np.nan_to_num(s), np.nan_to_num(c), D["St"], D["Ct"], D["c_max"]).auc)


def _decision_us(router: Any, Q: np.ndarray) -> float:
    ts = []
    for q in Q:
        t0 = time.perf_counter()
        router.core.route_one_detail(q, 0.0)
        ts.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(ts)


def bounded(D: dict[str, Any], n: int, max_rows: int, every: int = 2000) -> list[dict[str, Any]]:
    from knnroute.gateway.feedback import FeedbackStore

    rng = np.random.default_rng(0)
    stream = np.setdiff1d(np.arange(len(D["X"])), D["te"])  # training and validation prompts (never test)
    Q = D["X"][D["te"][:200]]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.knnr"
        prod = _prod(D, D["tr"])
        prod.save(path)
        store = FeedbackStore(prod, path, Path(tmp) / "fb.jsonl", max_rows=max_rows)
        t0 = time.perf_counter()
        for i in range(n + 1):
            if i % every == 0:
                store.save()
                out.append({"feedbacks": i, "rows": prod.size, "file_mb": round(path.stat().st_size / 1e6, 2),
                            "decision_us": round(_decision_us(prod, Q), 1), "folded": store.folded,
                            "test_auc": round(_test_auc(prod, D), 3),
                            "seconds": round(time.perf_counter() - t0, 1)})
                print(f"max_rows {max_rows}: {out[-1]}", flush=True)
            if i < n:
                _feed(store, D, int(stream[i % len(stream)]), f"b{i}", "k", rng)
        store.close()
    return out


def revert(D: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    from knnroute.gateway.feedback import FeedbackStore
    from knnroute.routers.curves import curve_from_predictions

    rng = np.random.default_rng(seed)
    order = rng.permutation(D["tr"])
    start = order[: len(order) // 10]
    lams = D["grid"][:: len(D["grid"]) // 5][:5]
    Xt = D["X"][D["te"]]

    def look(r: Any) -> tuple[float, np.ndarray, np.ndarray]:
        s, c = r.predict(Xt)
        auc = float(curve_from_predictions(np.nan_to_num(s), np.nan_to_num(c), D["St"], D["Ct"], D["c_max"]).auc)
        return auc, s, np.stack([r.core.route(Xt, np.array([lam]), 0).ravel() for lam in lams])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.knnr"
        prod = _prod(D, start)
        prod.save(path)
        store = FeedbackStore(prod, path, Path(tmp) / "fb.jsonl")
        a0 = look(prod)
        rest = order[len(start):]
        for i in range(1000):
            _feed(store, D, int(rest[i % len(rest)]), f"g{i}", "good", rng)
        a1 = look(prod)
        for i in range(500):
            _feed(store, D, int(rest[(1000 + i) % len(rest)]), f"e{i}", "evil", rng, invert=True)
        a2 = look(prod)
        res = store.revert(key="evil")
        a3 = look(prod)
        store.close()
    same = bool(np.array_equal(a3[1], a1[1]) and np.array_equal(a3[2], a1[2]) and a3[0] == a1[0])
    return {"start_auc": a0[0], "after_honest_auc": a1[0], "after_attack_auc": a2[0], "after_revert_auc": a3[0],
            "decisions_changed_by_attack": int((a2[2] != a1[2]).sum()),
            "decisions_changed_after_revert": int((a3[2] != a1[2]).sum()), "n_decisions": int(a1[2].size),
            "predictions_identical_after_revert": same, **res}


def plot(result: dict[str, Any], path: str) -> None:
    """Rows, file size and one decision's time against feedbacks, per max_rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for m, pts in result["bounded"].items():
        x = [p["feedbacks"] for p in pts]
        label = "no folding" if m == "0" else f"max_rows = {int(m):,}"
        for ax, key in zip(axes, ("rows", "file_mb", "decision_us"), strict=True):
            ax.plot(x, [p[key] for p in pts], marker="o", ms=3, label=label)
    for ax, title in zip(axes, ("router rows", "router file (MB)", "one decision (µs, median of 200)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("feedbacks")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--feedbacks", type=int, default=20_000)
    p.add_argument("--max-rows", type=int, nargs="*", default=[0, 5000])
    p.add_argument("--json", default="docs/online-state.json")
    p.add_argument("--plot", default="docs/online-state.png", help="the plot (from --json with --plot-only)")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from an existing --json")
    args = p.parse_args(argv)
    if args.plot_only:
        with open(args.json) as fh:
            plot(json.load(fh), args.plot)
        return 0
    import knnroute_core

    meta = {"isa": knnroute_core.isa(), "host": platform.node(), "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    D = _data()
    out: dict[str, Any] = {"meta": meta, "revert": revert(D)}
    print("revert:", out["revert"], flush=True)
    out["bounded"] = {str(m): bounded(D, args.feedbacks, m) for m in args.max_rows}
    meta["load_avg_end"] = os.getloadavg()[0]
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    plot(out, args.plot)
    print(f"wrote {args.json}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
