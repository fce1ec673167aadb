"""Issue 21 experiment: stack ``knn-tuned`` with the ridge (``linear``) router, blend weight chosen on validation.

For every (dataset, seed) the split, fit and scoring are those of ``knnroute eval`` (``run_cell``):

1. ``knn-tuned`` is fitted exactly as the evaluator fits it (k, weighting, shrinkage, cost model chosen on
   validation + leave-one-out train).
2. The ``linear`` router (per-model ridge, penalty per column chosen by validation MSE) is fitted on the same
   training rows.
3. Stacked predictions ``a * knn + (1 - a) * ridge`` (score and cost alike) for ``a`` in ``ALPHAS``. The weight
   ``a`` is chosen by hull AUC over the same tuning pool ``knn-tuned`` uses: the validation prompts plus every
   training prompt predicted leave-one-out (kNN: its neighbours among the other training prompts with the
   chosen configuration; ridge: the exact leave-one-out prediction from the hat matrix at each column's chosen
   penalty). Ties go to the larger ``a`` (pure kNN first).
4. The chosen blend is scored on test (exact lambda sweep, hull AUC), paired with ``knn-tuned`` on the same
   seed.

Variants (``VARIANTS``): blend the score only (cost from kNN), or choose ``a`` on the validation prompts only;
and ``stack_joint``, which chooses the kNN configuration (``knn-tuned``'s whole grid) and ``a`` together on the
pool. Results and their reading: ``docs/quality.md``.

Also printed, for context only (never a valid router): ridge alone, and the best ``a`` picked on test (the
ceiling of this family of blends on these splits).

Run (MiniLM embeddings cached)::

    KNNROUTE_CACHE=/tmp/eqcache KNNROUTE_DATA=/work/shared/data HF_HUB_OFFLINE=1 \
        python3 -m experiments.quality_stack --data routerbench --out experiments/quality_stack.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knnroute.evaluate import references as _refs
from knnroute.evaluate.cell import EvalData, input_cost_kwargs, split_indices
from knnroute.routers import curves as _curves
from knnroute.routers import tuned as _tuned
from knnroute.routers.linear import LinearRouter
from knnroute.routers.neighbours import search

# (name, blend the cost as well as the score, choose the weight on validation + LOO train (else validation only))
VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("stack", True, True),
    ("stack_scoreonly", False, True),
    ("stack_valonly", True, False),
)
ALPHAS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)

Arr = NDArray[np.float64]


def ridge_loo(lin: LinearRouter, X: NDArray[np.float32], S: Arr, C: Arr) -> tuple[Arr, Arr]:
    """Exact leave-one-out ridge predictions of the training rows at each column's chosen penalty.

    ``loo_i = y_i - (y_i - yhat_i) / (1 - h_ii)``, ``h`` from the centred Gram matrix's eigenbasis (intercept
    unpenalised), over the rows where the column is observed (columns grouped by observed rows, as
    ``LinearRouter.fit`` does). A row whose target is missing was not in that column's fit: its LOO
    prediction is the fitted one. The cost LOO is clipped at 0 like ``LinearRouter.predict``; the cost
    z-scaling uses the full training mean/std (a negligible leak).
    """
    Xd = np.asarray(X, dtype=np.float64)
    Y = np.concatenate([S, C], axis=1)
    alphas = np.concatenate([lin.alpha_score_, lin.alpha_cost_])
    s_fit = Xd @ lin.coef_score_.T + lin.intercept_score_
    c_fit = Xd @ lin.coef_cost_.T + lin.intercept_cost_  # unclipped: the LOO identity is for the linear fit
    Yhat = np.concatenate([s_fit, c_fit], axis=1)
    out = Yhat.copy()
    obs = np.isfinite(Y)
    groups: dict[bytes, list[int]] = {}
    for j in range(Y.shape[1]):
        if np.isfinite(alphas[j]):  # NaN: a constant predictor (too few rows), LOO left as fitted
            groups.setdefault(np.packbits(obs[:, j]).tobytes(), []).append(j)
    for cols in groups.values():
        rows = obs[:, cols[0]]
        Xr = Xd[rows]
        Xc = Xr - Xr.mean(axis=0)
        evals, V = np.linalg.eigh(Xc.T @ Xc)
        XV2 = (Xc @ V) ** 2
        for j in cols:
            h = XV2 @ (1.0 / (np.maximum(evals, 0.0) + alphas[j])) + 1.0 / rows.sum()
            y, yh = Y[rows, j], Yhat[rows, j]
            out[rows, j] = y - (y - yh) / np.maximum(1.0 - h, 1e-12)
    M = S.shape[1]
    return out[:, :M], np.maximum(out[:, M:], 0.0)


def knn_loo(model: _tuned.TunedKNNRouter, X: NDArray[np.float32], S: Arr, C: Arr) -> tuple[Arr, Arr]:
    """Leave-one-out predictions of the training rows with the chosen kNN configuration."""
    cfg = model.best_
    idx, sim = _tuned.loo_neighbours(X, cfg.k)
    sh, ch = _tuned.aggregate(idx, sim, S.astype(np.float32), C.astype(np.float32), cfg)
    return np.asarray(sh, dtype=np.float64), np.asarray(ch, dtype=np.float64)


def blend_auc(
    sk: Arr, ck: Arr, sr: Arr, cr: Arr, ts: Arr, tc: Arr, c_max: float, blend_cost: bool = True
) -> list[float]:
    """Hull AUC of every blend in ``ALPHAS`` (exact sweep); ``blend_cost=False`` keeps the kNN cost."""
    return [
        _curves.curve_from_predictions(
            a * sk + (1 - a) * sr, a * ck + (1 - a) * cr if blend_cost else ck, ts, tc, c_max
        ).auc
        for a in ALPHAS
    ]


def joint_choice(
    X_tr: NDArray[np.float32], S_tr: Arr, C_tr: Arr, X_va: NDArray[np.float32],
    rs: Arr, rc: Arr, ps: Arr, pc: Arr,
) -> tuple[_tuned.KNNConfig, int]:
    """(kNN configuration, blend index) with the highest AUC on the pool (validation + LOO train), jointly.

    The kNN grid is ``knn-tuned``'s (``tune_knn``: one search, every configuration from its prefix); ``rs`` /
    ``rc`` are the ridge predictions of the pool in the same row order. Ties: the earlier configuration, then
    the larger weight on kNN.
    """
    configs = _tuned.knn_grid(X_tr.shape[0] - 1)
    k_max = max(c.k for c in configs)
    idx, sim = search(X_tr, X_va, k_max)
    li, ls = _tuned.loo_neighbours(X_tr, k_max)
    idx, sim = np.concatenate([idx, li]), np.concatenate([sim, ls])
    c_max = _curves.cost_scale(pc)
    best, best_auc = (configs[0], 0), -np.inf
    preds = _tuned.grid_predictions(idx, sim, S_tr.astype(np.float32), C_tr.astype(np.float32), configs)
    for cfg, (sh, ch) in zip(configs, preds, strict=True):
        aucs = blend_auc(np.asarray(sh, np.float64), np.asarray(ch, np.float64), rs, rc, ps, pc, c_max)
        i = int(np.argmax(aucs))
        if aucs[i] > best_auc:
            best, best_auc = (cfg, i), aucs[i]
    return best


def run_seed(data: EvalData, seed: int) -> dict[str, Any]:
    """One (dataset, seed): knn-tuned, ridge, the validated blend and the test-picked blend, test AUCs."""
    sp = split_indices(data.n, seed, data.split)
    X_tr, X_va, X_te = data.X[sp.train], data.X[sp.val], data.X[sp.test]
    S_tr, C_tr = data.scores[sp.train], data.costs[sp.train]
    S_va, C_va = data.scores[sp.val], data.costs[sp.val]
    fit_kw, pred_kw = input_cost_kwargs(data, "knn-tuned", sp.train, sp.val, sp.test)
    if fit_kw:
        raise SystemExit("this experiment does not handle known input costs (cost model input+knn) yet")
    t0 = time.perf_counter()
    knn = _tuned.TunedKNNRouter(random_state=seed).fit(
        X_tr, S_tr, C_tr, model_names=list(data.model_names), X_val=X_va, scores_val=S_va, costs_val=C_va
    )
    lin = LinearRouter(random_state=seed).fit(
        X_tr, S_tr, C_tr, model_names=list(data.model_names), X_val=X_va, scores_val=S_va, costs_val=C_va
    )
    # tuning pool: validation + training leave-one-out (the pool knn-tuned was tuned on)
    kv_s, kv_c = (np.asarray(a, dtype=np.float64) for a in knn.predict(X_va))
    rv_s, rv_c = lin.predict(X_va)
    kl_s, kl_c = knn_loo(knn, X_tr, S_tr, C_tr)
    rl_s, rl_c = ridge_loo(lin, X_tr, S_tr, C_tr)
    ps, pc = _curves.fill_missing(np.concatenate([S_va, S_tr]), np.concatenate([C_va, C_tr]))
    vs, vc = _curves.fill_missing(S_va, C_va)
    ts, tc = _curves.fill_missing(data.scores[sp.test], data.costs[sp.test])
    c_max = _curves.cost_scale(tc)
    kt_s, kt_c = (np.asarray(a, dtype=np.float64) for a in knn.predict(X_te))
    rt_s, rt_c = lin.predict(X_te)
    oracle = _refs.oracle_curve(ts, tc, c_max).auc
    best = _refs.best_single_curve(ts, tc, c_max).auc
    out: dict[str, Any] = {
        "dataset": data.name, "seed": seed, "knn_config": knn.best_.label(),
        "auc_oracle": oracle, "auc_best_single": best,
    }
    # variants: (name, blend the cost too, tuning pool = validation + LOO train (True) or validation only)
    for name, blend_cost, pooled in VARIANTS:
        if pooled:
            tune = blend_auc(
                np.concatenate([kv_s, kl_s]), np.concatenate([kv_c, kl_c]),
                np.concatenate([rv_s, rl_s]), np.concatenate([rv_c, rl_c]),
                ps, pc, _curves.cost_scale(pc), blend_cost,
            )
        else:
            tune = blend_auc(kv_s, kv_c, rv_s, rv_c, vs, vc, _curves.cost_scale(vc), blend_cost)
        a_idx = int(np.argmax(tune))  # first maximum: ties to the larger weight on kNN
        test = blend_auc(kt_s, kt_c, rt_s, rt_c, ts, tc, c_max, blend_cost)
        best_test = int(np.argmax(test))
        out.setdefault("auc_knn_tuned", test[0])
        out.setdefault("auc_ridge", test[-1])  # ridge alone, score and cost (the first variant blends both)
        out[f"alpha_{name}"] = ALPHAS[a_idx]
        out[f"auc_{name}"] = test[a_idx]
        out[f"alpha_{name}_testpick"] = ALPHAS[best_test]
        out[f"auc_{name}_testpick"] = test[best_test]
        out[f"tune_auc_{name}"] = dict(zip(map(str, ALPHAS), tune, strict=True))
        out[f"test_auc_{name}"] = dict(zip(map(str, ALPHAS), test, strict=True))
    # joint: the kNN configuration and the blend weight chosen together on the pool
    cfg, a_idx = joint_choice(
        X_tr, S_tr, C_tr, X_va, np.concatenate([rv_s, rl_s]), np.concatenate([rv_c, rl_c]), ps, pc
    )
    jk_s, jk_c = (np.asarray(a, np.float64) for a in _tuned.make_knn_router(cfg).fit(X_tr, S_tr, C_tr).predict(X_te))
    a = ALPHAS[a_idx]
    out["alpha_stack_joint"], out["knn_config_joint"] = a, cfg.label()
    out["auc_stack_joint"] = _curves.curve_from_predictions(
        a * jk_s + (1 - a) * rt_s, a * jk_c + (1 - a) * rt_c, ts, tc, c_max
    ).auc
    return {
        **out,
        "seconds": time.perf_counter() - t0,
    }


def _gain(auc: float, r: dict[str, Any]) -> float:
    return 100.0 * (auc - r["auc_best_single"]) / (r["auc_oracle"] - r["auc_best_single"])


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and compared router: paired (router - knn-tuned) AUC mean, std, seeds better/worse, gain."""
    keys = ["auc_ridge", "auc_stack_joint"] + [f"auc_{v}{t}" for v, _, _ in VARIANTS for t in ("", "_testpick")]
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        base = np.array([r["auc_knn_tuned"] for r in rs])
        summary: dict[str, Any] = {
            "dataset": name, "n_seeds": len(rs), "auc_knn_tuned": float(base.mean()),
            "gain_knn_tuned": float(np.mean([_gain(r["auc_knn_tuned"], r) for r in rs])),
            "auc_best_single": float(np.mean([r["auc_best_single"] for r in rs])),
            "auc_oracle": float(np.mean([r["auc_oracle"] for r in rs])),
        }
        for key in keys:
            v = np.array([r[key] for r in rs])
            d = v - base
            summary[key] = {
                "auc": float(v.mean()),
                "gain": float(np.mean([_gain(r[key], r) for r in rs])),
                "diff_mean": float(d.mean()),
                "diff_std": float(d.std(ddof=1)) if d.size > 1 else 0.0,
                "better": int((d > 1e-9).sum()),
                "worse": int((d < -1e-9).sum()),
            }
        summary["alpha_stack_joint"] = [r["alpha_stack_joint"] for r in rs]
        for var, _, _ in VARIANTS:
            summary[f"alpha_{var}"] = [r[f"alpha_{var}"] for r in rs]
        out.append(summary)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="routerbench")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--out", default=None, help="write every row and the summary as JSON here")
    args = p.parse_args(argv)
    import knnroute_core
    from knnroute.commands.eval import load_eval_data

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rows = []
    for ed, _ds in load_eval_data(args.data, progress=False):
        for seed in seeds:
            r = run_seed(ed, seed)
            rows.append(r)
            picks = " ".join(
                f"{v}(a={r[f'alpha_{v}']:.1f})={r[f'auc_{v}']:.2f}[test-pick a={r[f'alpha_{v}_testpick']:.1f}: "
                f"{r[f'auc_{v}_testpick']:.2f}]"
                for v, _, _ in VARIANTS
            )
            print(f"{r['dataset']} seed={seed} knn-tuned={r['auc_knn_tuned']:.2f} ridge={r['auc_ridge']:.2f} "
                  f"joint(a={r['alpha_stack_joint']:.1f}, {r['knn_config_joint']})={r['auc_stack_joint']:.2f} "
                  f"{picks} {r['seconds']:.1f}s", flush=True)
    summary = summarise(rows)
    print("\n| dataset | router | AUC | gain % | paired diff vs knn-tuned, mean ± std | seeds better/worse |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['dataset']} | knn-tuned | {s['auc_knn_tuned']:.2f} | {s['gain_knn_tuned']:.1f} | | |")
        for key, v in s.items():
            if isinstance(v, dict):
                print(f"| {s['dataset']} | {key[4:]} | {v['auc']:.2f} | {v['gain']:.1f} | "
                      f"{v['diff_mean']:+.2f} ± {v['diff_std']:.2f} | {v['better']}/{v['worse']} |")
        print(f"| {s['dataset']} | (best-single / oracle) | {s['auc_best_single']:.2f} / {s['auc_oracle']:.2f} "
              "| | | |")
    print("\nchosen weights on kNN: " + "; ".join(
        f"{s['dataset']} " + ", ".join(f"{v}={s[f'alpha_{v}']}" for v in [*(v for v, _, _ in VARIANTS), "stack_joint"])
        for s in summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"isa": knnroute_core.isa(), "alphas": ALPHAS, "rows": rows, "summary": summary}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
