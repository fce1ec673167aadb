"""How much of the start -> full-information gap richer-than-bandit feedback could recover (issue 29, third pass).

Same split, start rows and k as ``bench/online_learning.py``. The stream rows are added at once (no routing),
revealing more than a bandit does, and the test AUC is read with the estimators of
``bench/online_estimators.py``:

* ``rare from start``: the full-information router, except that the models with a greedy feedback share
  below 3% (``--shares``: the greedy replay's shares) are predicted by the start router: what perfect
  knowledge of the models greedy routing reaches is worth when the others stay as the start knew them;
* ``popular revealed``: every stream row reveals all the models with a share >= 3% (not only the routed one);
* ``random one``: every stream row reveals one model drawn with the greedy shares (or uniformly): the
  bandit's number of cells without its selection bias.

    HF_HUB_OFFLINE=1 python -m bench.online_ceiling --data routerbench --task winograde \
        --shares 0 0 0 0 0 0.246 0 0 0.556 0.037 0.161
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    from bench.online_estimators import NpRouter
    from bench.online_learning import _start_rows, _task_split
    from knnroute.embed.prepare import prepare_data
    from knnroute.routers.curves import cost_scale, curve_from_predictions, fill_missing

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--shares", nargs="+", type=float, required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--n0", type=float, default=30.0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    shares = np.asarray(a.shares)
    rare = shares < 0.03
    res: dict[str, list[float]] = {}

    def put(key: str, v: float) -> None:
        res.setdefault(key, []).append(float(v))

    for seed in range(a.seeds):
        for ds in prepare_data(a.data, seed=seed, progress=False):
            if ds.name != a.task:
                continue
            tr, te = _task_split(ds, seed)
            X = np.asarray(ds.embeddings, np.float32)
            S, C = np.asarray(ds.scores, float), np.asarray(ds.costs, float)
            St, Ct = fill_missing(S[te], C[te])
            cm = cost_scale(Ct)
            k = min(a.k, _start_rows(len(tr)))
            rng = np.random.default_rng(seed)
            order = rng.permutation(tr)
            n0 = _start_rows(len(order))
            start, stream = order[:n0], order[n0:]

            def auc(r: NpRouter, Xt: np.ndarray = X[te], St: np.ndarray = St, Ct: np.ndarray = Ct,
                    cm: float = cm) -> float:
                s, c = r.predict(Xt)
                return float(curve_from_predictions(s, c, St, Ct, cm).auc)

            sf, cf = NpRouter(X[tr], S[tr], C[tr], k, "lists").predict(X[te])
            ss, cs = NpRouter(X[start], S[start], C[start], k, "lists").predict(X[te])
            put("full information", float(curve_from_predictions(sf, cf, St, Ct, cm).auc))
            put("start", float(curve_from_predictions(ss, cs, St, Ct, cm).auc))
            sf[:, rare], cf[:, rare] = ss[:, rare], cs[:, rare]
            put("rare from start", float(curve_from_predictions(sf, cf, St, Ct, cm).auc))
            Sp = np.full((len(stream), S.shape[1]), np.nan)
            Cp = Sp.copy()
            Sp[:, ~rare], Cp[:, ~rare] = S[stream][:, ~rare], C[stream][:, ~rare]
            for est in ("lists", "radius", "resid"):
                r = NpRouter(X[start], S[start], C[start], k, est, n0=a.n0, capacity=len(tr))
                r.add(X[stream], Sp, Cp)
                put(f"popular revealed, {est}", auc(r))
            uni = np.full(len(shares), 1 / len(shares))
            for name, pr in (("greedy shares", shares / shares.sum()), ("uniform", uni)):
                ch = rng.choice(len(pr), size=len(stream), p=pr)
                Sq = np.full((len(stream), S.shape[1]), np.nan)
                Cq = Sq.copy()
                Sq[np.arange(len(stream)), ch] = S[stream, ch]
                Cq[np.arange(len(stream)), ch] = C[stream, ch]
                for est, w in (("radius", 0.5), ("impute", 1.0), ("resid-limpute", 0.3)):
                    r = NpRouter(X[start], S[start], C[start], k, est, n0=a.n0 if est != "impute" else 3.0,
                                 w_imp=w, capacity=len(tr))
                    r.add(X[stream], Sq, Cq)
                    put(f"random one ({name}), {est}", auc(r))
    start_m, full_m = np.mean(res["start"]), np.mean(res["full information"])
    out = {}
    for key, v in res.items():
        m, s = float(np.mean(v)), float(np.std(v))
        rec = (m - start_m) / (full_m - start_m) if full_m != start_m else float("nan")
        out[key] = {"mean": m, "std": s, "recovered": rec, "per_seed": v}
        print(f"{key:45s} {m:.2f} ± {s:.2f}  ({100 * rec:.0f}% of the gap)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "results": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
