"""Issue 21 experiments on all nine datasets: better neighbours, better predictions, chosen like ``knn-tuned``.

Every idea is a larger search space for the same tuner: each candidate (representation x kNN configuration x
cost model x post-processing) is scored by hull AUC on ``knn-tuned``'s tuning pool (the validation prompts plus
every training prompt routed leave-one-out), the pool's best candidate is scored once on test. A *family* is a
subset of the candidates; ``base`` is exactly ``knn-tuned`` (checked: its test AUC equals ``knnroute eval``'s).
Candidates are ordered with ``base`` first, so a tie on the pool keeps the plain router.

Families (``FAMILIES``):

- ``base``: ``knn-tuned`` (k x weighting x shrinkage x cost model, :func:`knnroute.routers.tuned.knn_grid`).
- ``wide``: ``base`` plus k in {300, 500, 1000} and shrinkage in {2, 10, 50} (a larger grid, nothing new).
- ``lexical``: ``base`` plus neighbours by a hybrid similarity ``w cos_dense + (1 - w) cos_tfidf``
  (word 1-2-gram TF-IDF fitted on the training prompts, 256-d LSA; the concatenation
  ``[sqrt(w) x_dense, sqrt(1 - w) x_tfidf]`` of unit rows has exactly that dot product), w in {0.75, 0.5}.
- ``static``: ``base`` plus neighbours by ``w cos_minilm + (1 - w) cos_wordllama`` (both embedders), w in
  {0.75, 0.5}.
- ``lcb``: ``base`` plus a pessimistic score ``s_hat - kappa sqrt(s_hat (1 - s_hat) / (n + beta))`` (n the
  neighbours that observed the model, beta the shrinkage), kappa in {0.5, 1, 2}: prefer what the neighbours
  are sure of.
- ``calib``: after ``base``'s choice, per-model isotonic calibration of the predicted score, fitted on the pool
  (cross-fitted in two folds to score it on the pool; fitted on the whole pool for test); kept only if the
  cross-fitted pool AUC beats the uncalibrated one.
- ``dedup``: ``base`` plus neighbours with similarity >= tau skipped (tau in {0.95, 0.9}): near duplicates
  that differ in the one word that matters (Winogrande's twin sentences) carry the opposite label
  (``experiments/headroom.py``).
- ``irt``: ``base`` plus smoothed labels: a Rasch model (one ability per model, one difficulty per training
  prompt, fitted on the training outcomes; IRT-Router's idea, arXiv 2506.01048, in its simplest
  one-dimensional form) gives each training outcome an expectation ``sigmoid(ability_m - difficulty_j)``, and
  the neighbours average ``a outcome + (1 - a) expectation``, a in {0.75, 0.5, 0.25, 0}. Linear in the
  labels, so a fitted router is an ordinary kNN router over a smoothed outcome table.
- ``ens``: ``base`` plus the mean prediction of the 3 (10) configurations with the best pool AUC.
- ``all``: ``wide`` + ``lexical`` + ``static`` + ``lcb`` + ``dedup`` candidates together, then ``calib`` on the choice.

Also reported (never a router): ``ceiling``, the best test AUC of any candidate, picked on test.

Run (embeddings cached under ``$KNNROUTE_CACHE``)::

    KNNROUTE_DATA=/work/shared/data HF_HUB_OFFLINE=1 python3 -m experiments.quality_ideas --data all \\
        --out experiments/quality_ideas.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knnroute.embed.lexical import lexical_vectors, mix
from knnroute.evaluate import references as _refs
from knnroute.evaluate.cell import EvalData, input_cost_kwargs, split_indices
from knnroute.routers import curves as _curves
from knnroute.routers import tuned as _tuned
from knnroute.routers.neighbours import loo_search, search

Arr = NDArray[np.float64]
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
WIDE_KS: tuple[int, ...] = (300, 500, 1000)
WIDE_SHRINK: tuple[float, ...] = (2.0, 10.0, 50.0)
MIX_W: tuple[float, ...] = (0.75, 0.5)
KAPPAS: tuple[float, ...] = (0.5, 1.0, 2.0)
DROP_TAUS: tuple[float, ...] = (0.95, 0.9)
DROP_EXTRA = 64
ENS_N: tuple[int, ...] = (3, 10)
IRT_A: tuple[float, ...] = (0.75, 0.5, 0.25, 0.0)
FAMILIES: dict[str, tuple[str, ...]] = {
    "base": ("base",),
    "wide": ("base", "wide"),
    "lexical": ("base", "lexical"),
    "lexhash": ("base", "lexhash"),
    "static": ("base", "static"),
    "lcb": ("base", "lcb"),
    "dedup": ("base", "dedup"),
    "ens": ("base", "ens"),
    "irt": ("base", "irt"),
    "all": ("base", "wide", "lexical", "static", "lcb", "dedup", "irt"),
}


@dataclass
class Cand:
    """One candidate: its tags, pool AUC, test AUC and how to rebuild its predictions."""

    order: int
    tag: str  # which family added it
    label: str
    pool_auc: float
    test_auc: float
    pool_pred: Callable[[], tuple[Arr, Arr]]
    test_pred: Callable[[], tuple[Arr, Arr]]


def unit(A: NDArray[Any]) -> NDArray[np.float32]:
    A = np.asarray(A, dtype=np.float64)
    n = np.linalg.norm(A, axis=1, keepdims=True)
    return (A / np.where(n > 0, n, 1.0)).astype(np.float32)


def tfidf_lsa(texts: Sequence[str], train: NDArray[np.int64], dim: int = 256, seed: int = 0) -> NDArray[np.float32]:
    """Word 1-2-gram TF-IDF + LSA fitted on the training prompts only (the evaluator's
    :func:`knnroute.embed.lexical.lexical_vectors`); unit rows."""
    T = lexical_vectors(texts, train, dim=dim, seed=seed)
    if T is None:
        raise ValueError("the training prompts share no term")
    return T


def hashed_lexical(texts: Sequence[str], dim: int = 1024) -> NDArray[np.float32]:
    """Stateless lexical vectors: binary word 1-2-grams (English stop words dropped) feature-hashed with
    random signs into ``dim`` buckets (a count sketch: dot products are preserved in expectation); unit rows.
    Needs no fitted state, so a router file would need only the spec."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=True, binary=True,
                           stop_words="english", norm=None)
    return unit(hv.transform(list(texts)).toarray())


class Setup:
    """Split, truths and neighbour lists of one (dataset, seed)."""

    def __init__(self, data: EvalData, seed: int) -> None:
        self.data, self.seed = data, seed
        sp = split_indices(data.n, seed, data.split)
        self.sp = sp
        self.S_tr = data.scores[sp.train].astype(np.float32)
        self.C_tr = data.costs[sp.train].astype(np.float32)
        S_pool = np.concatenate([data.scores[sp.val], data.scores[sp.train]])
        C_pool = np.concatenate([data.costs[sp.val], data.costs[sp.train]])
        self.S_pool_raw = S_pool
        self.ps, self.pc = _curves.fill_missing(S_pool, C_pool)
        self.pcm = _curves.cost_scale(self.pc)
        self.ts, self.tc = _curves.fill_missing(data.scores[sp.test], data.costs[sp.test])
        self.tcm = _curves.cost_scale(self.tc)
        fit_kw, pred_kw = input_cost_kwargs(data, "knn-tuned", sp.train, sp.val, sp.test)
        # cost models as tune_knn orders them: (name, cost table, known input cost on pool, on test)
        self.cost_models: list[tuple[str, NDArray[np.float32], Any, Any]] = [("knn", self.C_tr, 0.0, 0.0)]
        if fit_kw:
            k_tr, k_va = fit_kw["input_cost"], fit_kw["input_cost_val"]
            r_tr = _tuned.residual_costs(self.C_tr, k_tr).astype(np.float32)
            self.cost_models.append(("input+knn", r_tr, np.concatenate([k_va, k_tr]), pred_kw["input_cost"]))
        self.n_train = int(sp.train.size)

    def neighbours(
        self, X: NDArray[np.float32], k_max: int, drop_above: float | None = None
    ) -> tuple[Any, Any, Any, Any]:
        """Pool (validation + LOO train) and test neighbours; ``drop_above``: skip neighbours that similar."""
        Xtr, Xva, Xte = X[self.sp.train], X[self.sp.val], X[self.sp.test]
        extra = 0 if drop_above is None else max(0, min(DROP_EXTRA, self.n_train - 1 - k_max))
        iv, sv = search(Xtr, Xva, k_max + extra)
        il, sl = loo_search(Xtr, k_max + extra)
        it, st = search(Xtr, Xte, k_max + extra)
        pi, ps = np.concatenate([iv, il]), np.concatenate([sv, sl])
        if drop_above is not None:
            pi, ps = skip_similar(pi, ps, drop_above, k_max)
            it, st = skip_similar(it, st, drop_above, k_max)
        return pi, ps, it, st


def skip_similar(idx: NDArray[np.int64], sim: NDArray[np.float32], tau: float, k: int) -> tuple[Any, Any]:
    """The first ``k`` neighbours with similarity below ``tau`` (near duplicates moved behind the rest)."""
    order = np.argsort(sim >= tau, axis=1, kind="stable")[:, :k]
    return (np.ascontiguousarray(np.take_along_axis(idx, order, 1)),
            np.ascontiguousarray(np.take_along_axis(sim, order, 1)))


def rasch(S: NDArray[Any], lam_b: float = 0.5, lam_t: float = 0.01, iters: int = 60) -> tuple[Arr, Arr]:
    """Rasch model ``P(s_im = 1) = sigmoid(theta_m - b_i)`` of the training outcomes (NaN = missing), by
    alternating penalised Newton steps; graded scores in [0, 1] are used as soft labels. Returns (theta, b)."""
    obs = ~np.isnan(S)
    y = np.where(obs, S, 0.0).astype(np.float64)
    w = obs.astype(np.float64)
    theta = np.zeros(S.shape[1])
    b = np.zeros(S.shape[0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(theta[None, :] - b[:, None])))
        v = w * p * (1.0 - p)
        b += ((w * (p - y)).sum(1) - lam_b * b) / (v.sum(1) + lam_b)
        p = 1.0 / (1.0 + np.exp(-(theta[None, :] - b[:, None])))
        v = w * p * (1.0 - p)
        theta += ((w * (y - p)).sum(0) - lam_t * theta) / (v.sum(0) + lam_t)
    return theta, b


def lcb(sh: Arr, idx: NDArray[np.int64], S_tr: NDArray[np.float32], k: int, beta: float, kappa: float) -> Arr:
    """``s_hat - kappa sqrt(s_hat (1 - s_hat) / (n_obs + beta))`` per model (n_obs: neighbours observing it)."""
    n_obs = (~np.isnan(S_tr))[idx[:, :k]].sum(axis=1).astype(np.float64)
    p = np.clip(sh, 0.0, 1.0)
    return sh - kappa * np.sqrt(p * (1.0 - p) / np.maximum(n_obs + beta, 1.0))


def grid_candidates(
    st: Setup, tag: str, rep_label: str, X: NDArray[np.float32], configs: Sequence[_tuned.KNNConfig],
    start: int, kappas: Sequence[float] = (0.0,), drop_above: float | None = None,
    irt: Sequence[float] = (),
) -> list[Cand]:
    """Every (config, cost model, kappa) of one representation, scored on pool and test.

    ``irt``: instead of kappas, label weights ``a``: the neighbours average ``a s + (1 - a) sigmoid(theta_m - b_j)``
    (outcome and Rasch expectation of each training prompt j) instead of the outcome ``s``.
    """
    k_max = max(c.k for c in configs)
    pi, ps_, ti, ts_ = st.neighbours(X, k_max, drop_above)
    out: list[Cand] = []
    order = start
    if irt:
        theta, bdiff = rasch(st.S_tr)
        expect = 1.0 / (1.0 + np.exp(-(theta[None, :] - bdiff[:, None])))
        for a in irt:
            # smoothed labels: a * outcome + (1 - a) * its Rasch expectation (missing stays missing); the
            # neighbours average these exactly as they average outcomes, so the core serves it unchanged
            S_tab = np.where(np.isnan(st.S_tr), np.nan, a * st.S_tr + (1 - a) * expect).astype(np.float32)
            for cm, c_table, add_p, add_t in st.cost_models:
                pp = _tuned.grid_predictions(pi, ps_, S_tab, c_table, configs)
                tp = _tuned.grid_predictions(ti, ts_, S_tab, c_table, configs)
                for cfg, (sh, ch), (tsh, tch) in zip(configs, pp, tp, strict=True):
                    sh64, tsh64 = np.asarray(sh, np.float64), np.asarray(tsh, np.float64)
                    pc_hat = np.asarray(ch, np.float64) + add_p
                    tc_hat = np.asarray(tch, np.float64) + add_t
                    pa = _curves.curve_from_predictions(sh64, pc_hat, st.ps, st.pc, st.pcm).auc
                    ta = _curves.curve_from_predictions(tsh64, tc_hat, st.ts, st.tc, st.tcm).auc
                    lab = f"{rep_label}; {cfg.label()}; cost={cm}; labels {a:g} outcome + {1 - a:g} rasch"
                    out.append(Cand(order, tag, lab, pa, ta,
                                    (lambda u=sh64, v=pc_hat: (u, v)), (lambda u=tsh64, v=tc_hat: (u, v))))
                    order += 1
        return out
    for kappa in kappas:
        for cm, c_table, add_p, add_t in st.cost_models:
            pp = list(_tuned.grid_predictions(pi, ps_, st.S_tr, c_table, configs))
            tp = list(_tuned.grid_predictions(ti, ts_, st.S_tr, c_table, configs))
            for cfg, (sh, ch), (tsh, tch) in zip(configs, pp, tp, strict=True):
                sh64, tsh64 = np.asarray(sh, np.float64), np.asarray(tsh, np.float64)
                if kappa:
                    sh64 = lcb(sh64, pi, st.S_tr, cfg.k, cfg.shrinkage, kappa)
                    tsh64 = lcb(tsh64, ti, st.S_tr, cfg.k, cfg.shrinkage, kappa)
                pc_hat = np.asarray(ch, np.float64) + add_p
                tc_hat = np.asarray(tch, np.float64) + add_t
                pa = _curves.curve_from_predictions(sh64, pc_hat, st.ps, st.pc, st.pcm).auc
                ta = _curves.curve_from_predictions(tsh64, tc_hat, st.ts, st.tc, st.tcm).auc
                lab = f"{rep_label}; {cfg.label()}; cost={cm}" + (f"; lcb kappa={kappa:g}" if kappa else "")
                out.append(Cand(order, tag, lab, pa, ta,
                                (lambda a=sh64, b=pc_hat: (a, b)), (lambda a=tsh64, b=tc_hat: (a, b))))
                order += 1
    return out


def ensemble_candidates(st: Setup, base: Sequence[Cand], start: int) -> list[Cand]:
    """Means of the predictions of the ``n`` best candidates on the pool, n in ``ENS_N``."""
    ranked = sorted(base, key=lambda c: (-c.pool_auc, c.order))
    out = []
    for i, n in enumerate(ENS_N):
        top = ranked[:n]
        pp = [c.pool_pred() for c in top]
        tp = [c.test_pred() for c in top]
        ps_, pc_ = np.mean([a for a, _ in pp], 0), np.mean([b for _, b in pp], 0)
        ts_, tc_ = np.mean([a for a, _ in tp], 0), np.mean([b for _, b in tp], 0)
        pa = _curves.curve_from_predictions(ps_, pc_, st.ps, st.pc, st.pcm).auc
        ta = _curves.curve_from_predictions(ts_, tc_, st.ts, st.tc, st.tcm).auc
        out.append(Cand(start + i, "ens", f"mean of the {n} best on the pool", pa, ta,
                        (lambda a=ps_, b=pc_: (a, b)), (lambda a=ts_, b=tc_: (a, b))))
    return out


def calibrate(st: Setup, cand: Cand) -> tuple[float, float]:
    """(cross-fitted pool AUC, test AUC) of ``cand`` with per-model isotonic score calibration."""
    from sklearn.isotonic import IsotonicRegression

    ph, pch = cand.pool_pred()
    th, tch = cand.test_pred()
    y = st.S_pool_raw
    n = ph.shape[0]
    fold = np.random.default_rng(1000 + st.seed).permutation(n) % 2

    def fit_apply(train_rows: NDArray[np.bool_], src: Arr, dst: Arr) -> Arr:
        out = dst.copy()
        for m in range(src.shape[1]):
            ok = train_rows & ~np.isnan(y[:, m])
            if ok.sum() < 10:
                continue
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(src[ok, m], y[ok, m])
            out[:, m] = iso.predict(dst[:, m])
        return out

    cal_pool = ph.copy()
    for f in (0, 1):
        part = fit_apply(fold != f, ph, ph)
        cal_pool[fold == f] = part[fold == f]
    # a tiny tie-break from the raw prediction keeps the order within an isotonic step
    pa = _curves.curve_from_predictions(cal_pool + 1e-6 * ph, pch, st.ps, st.pc, st.pcm).auc
    cal_test = fit_apply(np.ones(n, bool), ph, th)
    ta = _curves.curve_from_predictions(cal_test + 1e-6 * th, tch, st.ts, st.tc, st.tcm).auc
    return pa, ta


def pick(cands: Sequence[Cand], tags: Sequence[str]) -> Cand:
    pool = [c for c in cands if c.tag in tags]
    return max(pool, key=lambda c: (c.pool_auc, -c.order))


def run_seed(data: EvalData, texts: Sequence[str] | None, X_static: NDArray[np.float32] | None, seed: int,
             families: Sequence[str]) -> dict[str, Any]:
    st = Setup(data, seed)
    n_loo = st.n_train - 1
    base_grid = _tuned.knn_grid(n_loo)
    wide_grid = [c for c in _tuned.knn_grid(n_loo, ks=_tuned.KS + WIDE_KS,
                                             shrinkages=_tuned.SHRINKAGES + WIDE_SHRINK)
                 if c not in set(base_grid)]
    t0 = time.perf_counter()
    cands = grid_candidates(st, "base", "minilm", data.X, base_grid, 0)
    want = {t for f in families for t in FAMILIES[f]}
    if "wide" in want and wide_grid:
        cands += grid_candidates(st, "wide", "minilm", data.X, wide_grid, len(cands))
    if "lexical" in want and texts is not None:
        T = tfidf_lsa(texts, st.sp.train, seed=seed)
        for w in MIX_W:
            cands += grid_candidates(st, "lexical", f"minilm+tfidf w={w:g}", mix(data.X, T, w), base_grid, len(cands))
    if "lexhash" in want and texts is not None:
        H = hashed_lexical(texts)
        for w in MIX_W:
            cands += grid_candidates(st, "lexhash", f"minilm+hashed lexical w={w:g}", mix(data.X, H, w),
                                     base_grid, len(cands))
    if "static" in want and X_static is not None:
        for w in MIX_W:
            cands += grid_candidates(st, "static", f"minilm+wordllama w={w:g}", mix(data.X, X_static, w),
                                     base_grid, len(cands))
    if "lcb" in want:
        lc = grid_candidates(st, "lcb", "minilm", data.X, base_grid, len(cands), kappas=KAPPAS)
        cands += lc
    if "dedup" in want:
        for tau in DROP_TAUS:
            cands += grid_candidates(st, "dedup", f"minilm, neighbours with sim >= {tau:g} skipped", data.X,
                                     base_grid, len(cands), drop_above=tau)
    if "irt" in want:
        cands += grid_candidates(st, "irt", "minilm", data.X, base_grid, len(cands), irt=IRT_A)
    if "ens" in want:
        cands += ensemble_candidates(st, [c for c in cands if c.tag == "base"], len(cands))
    oracle = _refs.oracle_curve(st.ts, st.tc, st.tcm).auc
    best = _refs.best_single_curve(st.ts, st.tc, st.tcm).auc
    out: dict[str, Any] = {"dataset": data.name, "seed": seed, "auc_oracle": oracle, "auc_best_single": best,
                           "n_candidates": len(cands)}
    for fam in families:
        c = pick(cands, FAMILIES[fam])
        out[f"auc_{fam}"] = c.test_auc
        out[f"pool_{fam}"] = c.pool_auc
        out[f"choice_{fam}"] = c.label
    for fam in ("base", "all"):
        if fam not in families:
            continue
        c = pick(cands, FAMILIES[fam])
        pa, ta = calibrate(st, c)
        # the raw choice's pool AUC is in-sample for the configuration only; calibration is kept if it wins
        keep = pa > c.pool_auc
        name = "calib" if fam == "base" else "all+calib"
        out[f"auc_{name}"] = ta if keep else c.test_auc
        out[f"calib_kept_{name}"] = bool(keep)
        out[f"calib_pool_{name}"] = pa
        out[f"calib_test_{name}"] = ta
        if fam == "base":
            out["auc_calib_forced"] = ta  # calibrated whatever the pool says (context, not a router)
    top = max(cands, key=lambda c: c.test_auc)
    out["auc_ceiling"] = top.test_auc
    out["choice_ceiling"] = top.label
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Markdown: per dataset and family, mean test AUC, gain %, paired diff vs ``base`` (mean ± std, ddof 1),
    seeds better/worse; then the nine-dataset averages (mean of per-dataset gains and the pooled gain
    ``(avg AUC - avg best-single) / (avg oracle - avg best-single)``, the issue's 12% figure)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = ["| dataset | router | AUC | gain % | paired diff vs knn-tuned | seeds better/worse |",
             "|---|---|---|---|---|---|"]
    avg: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
    for ds in datasets:
        rs = [r for r in rows if r["dataset"] == ds]
        o = np.mean([r["auc_oracle"] for r in rs])
        b = np.mean([r["auc_best_single"] for r in rs])
        for n in names:
            if f"auc_{n}" not in rs[0]:
                continue
            a = np.array([r[f"auc_{n}"] for r in rs])
            d = a - np.array([r["auc_base"] for r in rs])
            g = np.mean([(r[f"auc_{n}"] - r["auc_best_single"]) / (r["auc_oracle"] - r["auc_best_single"])
                         for r in rs])
            avg[n].append((float(a.mean()), float(b), float(o), float(g)))
            diff = "" if n == "base" else f"{d.mean():+.2f} ± {d.std(ddof=1) if d.size > 1 else 0:.2f}"
            bw = "" if n == "base" else f"{int((d > 1e-9).sum())}/{int((d < -1e-9).sum())}"
            lines.append(f"| {ds} | {n} | {a.mean():.2f} | {100 * g:.1f} | {diff} | {bw} |")
    lines += ["", "| router | avg AUC | mean of per-dataset gains % | pooled gain % |", "|---|---|---|---|"]
    for n, v in avg.items():
        if len(v) != len(datasets) or not v:
            continue
        auc, best, orc, g = (np.mean([x[i] for x in v]) for i in range(4))
        lines.append(f"| {n} | {auc:.2f} | {100 * g:.1f} | {100 * (auc - best) / (orc - best):.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="routerbench")
    ap.add_argument("--seeds", type=int, default=len(SEEDS))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", default=None)
    ap.add_argument("--summary", default=None, metavar="JSON", help="only print the tables of a saved run")
    args = ap.parse_args(argv)
    if args.summary:
        rows_ = json.load(open(args.summary))
        keys = [k[4:] for k in rows_[0] if k.startswith("auc_") and k[4:] not in ("oracle", "best_single")]
        print(summarise(rows_, keys))
        return 0
    from knnroute.commands.eval import load_eval_data

    families = [f for f in args.families.split(",") if f]
    rows: list[dict[str, Any]] = []
    for ed, ds in load_eval_data(args.data, progress=False):
        texts = list(ds.prompts) if getattr(ds, "prompts", None) is not None else None
        X_static = None
        if "static" in families and texts is not None:
            from knnroute.embed.static import WordLlamaEmbedder

            X_static = unit(WordLlamaEmbedder().encode(texts, progress=False))
        for seed in range(args.seeds):
            r = run_seed(ed, texts, X_static, seed, families)
            rows.append(r)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                              if not k.startswith("choice") and not k.startswith("pool")}), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
