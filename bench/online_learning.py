"""Online learning from bandit feedback (issue 29): what the gateway's ``/v1/feedback`` does to routing quality.

Per dataset and seed (the evaluation's split for that seed; validation rows join the stream): start a kNN
router on a seeded 10% of the training rows with full information (every model's outcome), then replay the
other 90% as traffic: each prompt is routed at a lambda drawn from the evaluation's dense lambda grid
(clients with mixed budgets) by an exploration policy (:mod:`knnroute.routers.explore`: ``greedy``,
``uniform`` = epsilon-greedy, ``thompson``, ``ucb``), and only the chosen model's score and cost are revealed
and added as one row (other models NaN = unobserved, the row's time = its feedback number), exactly what
the gateway adds per feedback. Measured: test AUC (exact sweep, non-decreasing hull, cost / c_max) at
checkpoints, cumulative regret (sum over requests of the best model's true utility minus the chosen one's,
utility ``(s - lam c) / (1 + lam c_max)``: score and cost / c_max weighted so every lambda counts on one
scale), feedback per model; beside the router fitted on all training rows with full information,
Best-single and Oracle.

``--drift``: a replay where one model silently degrades: from the stream's midpoint on, its score on one
task group (the prompts nearest a seeded centre; RouterBench: one of its tasks) is 0. Measured: the share of
that group's traffic routed to the degraded model before the change and 300-600 feedbacks after it (and per 50
feedbacks), with and without a half-life; all traffic at one lambda (``--drift-lambda``, default 0: the
gateway's default), the degraded model being the one the full-information router sends most of the group to.

    HF_HUB_OFFLINE=1 python -m bench.online_learning --data routerbench --json docs/online-learning.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

ALL = ["routerbench", "llmrouter", "routellm-mmlu", "routellm-gsm8k", "routellm-mtbench", "routerarena", "math-v"]


def _auc(core: Any, Xt: np.ndarray, St: np.ndarray, Ct: np.ndarray, c_max: float) -> float:
    from knnroute.routers.curves import curve_from_predictions

    s, c = core.predict(Xt, 0)
    return float(curve_from_predictions(np.nan_to_num(s), np.nan_to_num(c), St, Ct, c_max).auc)


def _router(X: np.ndarray, S: np.ndarray, C: np.ndarray, P: dict[str, Any]) -> Any:
    import knnroute_core

    S32 = np.ascontiguousarray(S, dtype=np.float32)
    C32 = np.ascontiguousarray(C, dtype=np.float32)
    core = knnroute_core.Router(np.ascontiguousarray(X, dtype=np.float32), S32, C32, min(P["k"], len(X)),
                                P["weighting"], 0.05, float(P["shrinkage"]))
    core.common_radius = bool(P.get("radius", True))
    return core


def _start_rows(n_train: int) -> int:
    """The start: 10% of the training rows (at least 10)."""
    return max(10, int(round(0.1 * n_train)))


def _k(P: dict[str, Any], n_train: int) -> int:
    """k for every router of a dataset: the setting, capped by the start's size (MT-Bench: 13), so the
    start, the bandit router and the full-information router differ only in their rows."""
    return min(int(P["k"]), _start_rows(n_train))


def local_counts(core: Any, x: np.ndarray) -> np.ndarray:
    """Per model, how many of its k nearest observing rows lie within the k nearest rows of all (the
    full-information router's neighbourhood): its evidence at the resolution the router could have."""
    k = min(int(core.k), core.size)
    q = np.ascontiguousarray(x, dtype=np.float32)[None, :]
    _, sim_all = core.search(q, k)
    idx, sim, cnt = core.search_per_model(q)
    valid = np.arange(sim.shape[2])[None, :] < cnt[0][:, None]
    return ((sim[0] >= sim_all[0, k - 1]) & valid).sum(axis=1).astype(np.float64)


def _policy(name: str, P: dict[str, Any]) -> Any:
    from knnroute.routers.explore import ExplorePolicy

    name = name.removeprefix("local-")
    if name == "uniform":
        return ExplorePolicy("uniform", epsilon=P["epsilon"])
    if name in ("thompson", "ucb"):
        return ExplorePolicy(name, scale=P["scale"])
    return ExplorePolicy(name)


def replay(X: np.ndarray, S: np.ndarray, C: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int,
           policy: str, P: dict[str, Any], n_checkpoints: int, drift: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """One bandit replay; returns AUCs at checkpoints, cumulative regret, feedback per model."""
    from knnroute.routers.curves import cost_scale, dense_lambda_grid, fill_missing

    St, Ct = fill_missing(S[te], C[te])
    c_max = cost_scale(Ct)
    grid = dense_lambda_grid(c_max, n=200)
    M = S.shape[1]
    mean_c = np.nanmean(C[tr], axis=0)
    S_true = np.where(np.isnan(S), 0.0, S)
    C_true = np.where(np.isnan(C), mean_c[None, :], C)
    rng = np.random.default_rng(seed)
    order = rng.permutation(tr)
    n0 = _start_rows(len(order))
    start, stream = order[:n0], order[n0:]
    if P.get("estimator", "core") != "core":  # a NumPy prototype (bench/online_estimators.py)
        from bench.online_estimators import np_router

        core = np_router(X[start], S[start], C[start], _k(P, len(order)), P, capacity=len(order))
    else:
        core = _router(X[start], S[start], C[start], dict(P, k=_k(P, len(order))))
    if P["half_life"] > 0:
        core.half_life = float(P["half_life"])
    pol = _policy(policy, P)
    prng = np.random.default_rng(seed + 1000)
    checks = set(np.linspace(0, len(stream), n_checkpoints + 1).astype(int).tolist())
    xs, aucs, regret = [], [], [0.0]
    counts = np.zeros(M, dtype=np.int64)
    drift_log: list[tuple[int, bool, int]] = []
    t0 = time.perf_counter()
    for i, r in enumerate(stream):
        if i in checks and drift is None:
            xs.append(i)
            aucs.append(_auc(core, X[te], St, Ct, c_max))
        lam = float(grid[rng.integers(len(grid))])
        if P.get("lam") is not None:  # one lambda for all traffic (the drift replay: the gateway's default 0)
            lam = float(P["lam"])
        s_true = S_true[r].copy()
        if drift is not None and i >= drift["at"] and drift["group"][r]:
            s_true[drift["model"]] = 0.0
        det = core.route_one_detail(X[r], lam)
        count = det["count"]
        if policy.startswith("local-"):  # the posterior's count: each model's rows among the k nearest of all
            count = local_counts(core, X[r])
        j = pol.choose(det["s_hat"], det["c_hat"], count, det["spread"], lam, prng)
        # regret in normalised utility: (s - lam c) / (1 + lam c_max), i.e. score and cost / c_max
        # weighted (1 - a, a) with a = lam c_max / (1 + lam c_max), so every lambda counts on one scale
        u = (s_true - lam * C_true[r]) / (1.0 + lam * c_max)
        regret.append(regret[-1] + float(u.max() - u[j]))
        s_row = np.full((1, M), np.nan, np.float32)
        c_row = np.full((1, M), np.nan, np.float32)
        s_row[0, j] = s_true[j]
        c_row[0, j] = C_true[r, j]
        core.add(X[r][None, :], s_row, c_row, np.array([i + 1.0]))
        counts[j] += 1
        if drift is not None and drift["group"][r]:
            drift_log.append((i, i >= drift["at"], int(j == drift["model"])))
    out: dict[str, Any] = {"seed": seed, "policy": policy, "start_rows": int(n0), "feedbacks": xs,
                           "feedback_per_model": counts.tolist(),
                           "regret": [round(x, 4) for x in regret[:: max(1, len(regret) // 50)]] + [regret[-1]],
                           "cumulative_regret": regret[-1], "seconds": round(time.perf_counter() - t0, 2)}
    if drift is None:
        xs.append(len(stream))
        aucs.append(_auc(core, X[te], St, Ct, c_max))
        out["auc"] = aucs
    else:
        out["drift_log"] = drift_log
    return out


def _task_split(ds: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    split = np.asarray(ds.split) if ds.split is not None else None
    if split is None:
        from knnroute.data.splits import random_split

        split = random_split(ds.n, seed)
    return np.flatnonzero(split != "test"), np.flatnonzero(split == "test")


def run_dataset(name: str, seeds: Sequence[int], policies: Sequence[str], P: dict[str, Any],
                n_checkpoints: int) -> list[dict[str, Any]]:
    from knnroute.embed.prepare import prepare_data
    from knnroute.evaluate.references import best_single_curve, oracle_curve
    from knnroute.routers.curves import cost_scale, fill_missing

    results: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for ds in prepare_data(name, seed=seed, progress=False):
            tr, te = _task_split(ds, seed)
            X = np.asarray(ds.embeddings, dtype=np.float32)
            S, C = np.asarray(ds.scores, dtype=np.float64), np.asarray(ds.costs, dtype=np.float64)
            St, Ct = fill_missing(S[te], C[te])
            c_max = cost_scale(Ct)
            res = results.setdefault(ds.name, {"task": ds.name, "models": list(ds.model_names), "k": _k(P, len(tr)),
                                                "n_train": int(len(tr)), "n_test": int(len(te)), "per_seed": [],
                                                "runs": []})
            full = _router(X[tr], S[tr], C[tr], dict(P, k=_k(P, len(tr))))
            if P.get("estimator", "core") != "core":  # the same estimator on all rows, for reference
                from bench.online_estimators import np_router

                full_np = np_router(X[tr], S[tr], C[tr], _k(P, len(tr)), P)
                res.setdefault("full_information_estimator_auc", []).append(_auc(full_np, X[te], St, Ct, c_max))
            res["per_seed"].append({"seed": seed, "full_information_auc": _auc(full, X[te], St, Ct, c_max),
                                    "best_single_auc": float(best_single_curve(St, Ct, c_max).auc),
                                    "oracle_auc": float(oracle_curve(St, Ct, c_max).auc)})
            for pol in policies:
                run = replay(X, S, C, tr, te, seed, pol, P, n_checkpoints)
                res["runs"].append(run)
                print(f"{ds.name} seed {seed} {pol}: start {run['auc'][0]:.2f} -> {run['auc'][-1]:.2f} "
                      f"(full {res['per_seed'][-1]['full_information_auc']:.2f}) regret "
                      f"{run['cumulative_regret']:.1f} in {run['seconds']} s", flush=True)
    return list(results.values())


def summarize(res: dict[str, Any], policies: Sequence[str]) -> dict[str, Any]:
    """Mean and std over seeds of start, final per policy, full information, Best-single, Oracle; recovery."""
    def ms(v: Sequence[float]) -> tuple[float, float]:
        a = np.asarray(v, dtype=np.float64)
        return float(a.mean()), float(a.std())

    ps = res["per_seed"]
    row: dict[str, Any] = {"task": res["task"], "seeds": len(ps)}
    for key in ("full_information_auc", "best_single_auc", "oracle_auc"):
        row[key] = ms([p[key] for p in ps])
    if res.get("full_information_estimator_auc"):
        row["full_information_estimator_auc"] = ms(res["full_information_estimator_auc"])
    starts = [r["auc"][0] for r in res["runs"] if r["policy"] == policies[0]]
    row["start_auc"] = ms(starts)
    full = row["full_information_auc"][0]
    for pol in policies:
        runs = [r for r in res["runs"] if r["policy"] == pol]
        row[pol] = {"final_auc": ms([r["auc"][-1] for r in runs]),
                    "cumulative_regret": ms([r["cumulative_regret"] for r in runs]),
                    "feedback_share": (np.sum([r["feedback_per_model"] for r in runs], axis=0)
                                       / max(1, np.sum([r["feedback_per_model"] for r in runs]))).round(3).tolist()}
        gap = full - row["start_auc"][0]
        row[pol]["recovered"] = (row[pol]["final_auc"][0] - row["start_auc"][0]) / gap if gap != 0 else None
    return row


def markdown(summary: Sequence[dict[str, Any]], policies: Sequence[str]) -> str:
    """The per-dataset table: AUC mean +- std over seeds, recovery of the start -> full-information gap,
    cumulative regret, the largest feedback shares (greedy and the last policy)."""
    def f(v: Sequence[float]) -> str:
        return f"{v[0]:.2f} ± {v[1]:.2f}"

    head = (["dataset", "seeds", "start"] + [f"after feedback, {p}" for p in policies]
            + ["full information, all rows", "Best-single", "Oracle",
               "gap recovered (" + ", ".join(policies) + ") if the gap > 1 std",
               "cumulative regret (" + ", ".join(policies) + ")"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        gap = r["full_information_auc"][0] - r["start_auc"][0]
        if gap > r["start_auc"][1]:
            rec = ", ".join(f"{100 * r[p]['recovered']:.0f}%" for p in policies)
        else:  # the full-information router is not above the start by more than one seed std
            rec = f"gap {gap:+.2f} (std {r['start_auc'][1]:.2f})"
        reg = ", ".join(f"{r[p]['cumulative_regret'][0]:.1f}" for p in policies)
        cells = ([r["task"], str(r["seeds"]), f(r["start_auc"])] + [f(r[p]["final_auc"]) for p in policies]
                 + [f(r["full_information_auc"]), f(r["best_single_auc"]), f(r["oracle_auc"]), rec, reg])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drift_experiment(name: str, seeds: Sequence[int], half_lives: Sequence[float], policy: str,
                     P: dict[str, Any], pooled: bool = False) -> list[dict[str, Any]]:
    """One model degrades on one group from the stream's midpoint; share of that group's traffic on it."""
    from knnroute.embed.prepare import prepare_data

    out = []
    for seed in seeds:
        for ds in prepare_data(name, seed=seed, progress=False, pooled=pooled):
            tr, te = _task_split(ds, seed)
            X = np.asarray(ds.embeddings, dtype=np.float32)
            S, C = np.asarray(ds.scores, dtype=np.float64), np.asarray(ds.costs, dtype=np.float64)
            # the group: a task of the data (when it has several), else the 30% of prompts nearest a seeded
            # centre; the model: the one the full-information
            # router sends most of the group to (at the replay's lambda; the degradation must matter)
            from knnroute.routers.curves import cost_scale, dense_lambda_grid, fill_missing

            rng = np.random.default_rng(seed)
            labels = None if ds.groups is None else np.asarray(ds.groups, dtype=object)
            if labels is not None and len(set(labels.tolist())) > 1:  # a task: seeds take them in turn
                names = sorted(set(labels.tolist()))
                gname = names[seed % len(names)]
                group = labels == gname
            else:  # the 30% of prompts nearest a seeded centre
                gname = "nearest 30% to a seeded prompt"
                centre = X[rng.choice(tr)]
                sim = X @ centre
                group = sim >= np.quantile(sim[tr], 0.7)
            full = _router(X[tr], S[tr], C[tr], dict(P, k=_k(P, len(tr))))
            grid = (dense_lambda_grid(cost_scale(fill_missing(S[te], C[te])[1]), n=200) if P.get("lam") is None
                    else np.array([float(P["lam"])]))
            routed = full.route(X[tr][group[tr]], grid, 0).ravel()
            model = int(np.bincount(routed, minlength=S.shape[1]).argmax())
            at = (len(tr) - _start_rows(len(tr))) // 2
            for hl in half_lives:
                Q = dict(P, half_life=hl)
                run = replay(X, S, C, tr, te, seed, policy, Q, 0, {"at": at, "group": group, "model": model})
                log = np.asarray(run.pop("drift_log"), dtype=np.int64).reshape(-1, 3)
                after = log[log[:, 1] == 1]
                before = log[log[:, 1] == 0]
                # feedbacks after the change (all traffic) at which the group's share on the model is measured
                fb_after = after[:, 0] - at
                windows = []
                for lo in range(0, int(fb_after.max()) + 1 if len(fb_after) else 0, 50):
                    sel = (fb_after >= lo) & (fb_after < lo + 50)
                    if sel.any():
                        windows.append([lo, round(float(after[sel, 2].mean()), 3), int(sel.sum())])
                late = after[(fb_after >= 300) & (fb_after < 600), 2]  # group requests 300-600 feedbacks after
                share0 = float(before[:, 2].mean()) if len(before) else float("nan")
                row = {"task": ds.name, "seed": seed, "half_life": hl, "model": ds.model_names[model], "group": gname,
                       "group_share_before": round(share0, 3),
                       "group_share_300_600": round(float(late.mean()), 3) if len(late) else None,
                       "group_requests_300_600": int(len(late)),
                       "moved_off": round(1.0 - float(late.mean()) / share0, 3) if len(late) and share0 > 0 else None,
                       "windows": windows, "cumulative_regret": run["cumulative_regret"]}
                out.append(row)
                print(f"drift {ds.name} seed {seed} half-life {hl:g}: {row['model']} share of group {gname} "
                      f"before {row['group_share_before']}, 300-600 feedbacks after {row['group_share_300_600']} "
                      f"(moved off {row['moved_off']}); "
                      f"per 50: {[w[1] for w in windows[:8]]}", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="*", default=ALL, help=f"dataset specs (default: {' '.join(ALL)})")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--policies", nargs="*", default=["greedy", "uniform", "thompson"])
    p.add_argument("--k", type=int, default=100, help="neighbours (capped by the start's size per dataset)")
    p.add_argument("--weighting", default="uniform")
    p.add_argument("--shrinkage", type=float, default=0.0)
    p.add_argument("--half-life", type=float, default=0.0, help="time decay in feedbacks (0: off)")
    p.add_argument("--no-radius", action="store_true",
                   help="each model's own k nearest observing rows only (no common radius)")
    p.add_argument("--estimator", default="core",
                   help="core (knnroute_core) or a NumPy prototype of bench/online_estimators.py")
    p.add_argument("--n0", type=float, default=3.0, help="prototype estimators: pseudo-rows of the prior")
    p.add_argument("--impute-weight", type=float, default=0.5, help="impute: weight of an imputed cell")
    p.add_argument("--epsilon", type=float, default=0.1, help="uniform exploration's probability")
    p.add_argument("--scale", type=float, default=0.5, help="thompson / ucb posterior scale")
    p.add_argument("--checkpoints", type=int, default=5)
    p.add_argument("--drift", nargs="*", type=float, default=None,
                   help="run the drift replay instead, with these half-lives (0: none)")
    p.add_argument("--drift-lambda", type=float, default=0.0,
                   help="the drift replay's lambda for all traffic (default 0, the gateway's default; -1: the grid)")
    p.add_argument("--pooled", action="store_true", help="drift: pool a spec's datasets (groups = its tasks)")
    p.add_argument("--json", default="docs/online-learning.json")
    args = p.parse_args(argv)
    import knnroute_core

    P = {"k": args.k, "weighting": args.weighting, "shrinkage": args.shrinkage, "half_life": args.half_life,
         "epsilon": args.epsilon, "scale": args.scale, "radius": not args.no_radius,
         "estimator": args.estimator, "n0": args.n0, "impute_weight": args.impute_weight}
    meta = {"isa": knnroute_core.isa(), "host": platform.node(), "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg()[0], "seeds": args.seeds, **P,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    seeds = list(range(args.seeds))
    if args.drift is not None:
        P["lam"] = None if args.drift_lambda < 0 else args.drift_lambda
        meta["drift_lambda"] = P["lam"]
        rows = [r for name in args.data for r in drift_experiment(name, seeds, args.drift or [0.0],
                                                                  args.policies[0], P, args.pooled)]
        out: dict[str, Any] = {"meta": meta, "drift": rows}
    else:
        tasks = [t for name in args.data for t in run_dataset(name, seeds, args.policies, P, args.checkpoints)]
        summary = [summarize(t, args.policies) for t in tasks]
        for row in summary:
            line = " | ".join(f"{pol} {row[pol]['final_auc'][0]:.2f} +- {row[pol]['final_auc'][1]:.2f} "
                              f"(rec {100 * (row[pol]['recovered'] or 0):.0f}%, "
                              f"regret {row[pol]['cumulative_regret'][0]:.1f})"
                              for pol in args.policies)
            print(f"{row['task']}: start {row['start_auc'][0]:.2f} +- {row['start_auc'][1]:.2f} | {line} | full "
                  f"{row['full_information_auc'][0]:.2f} (estimator's "
                  f"{row.get('full_information_estimator_auc', [float('nan')])[0]:.2f}) "
                  f"| best-single {row['best_single_auc'][0]:.2f} | oracle "
                  f"{row['oracle_auc'][0]:.2f}", flush=True)
        out = {"meta": meta, "summary": summary, "tasks": tasks}
        print(markdown(summary, args.policies))
    meta["load_avg_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
