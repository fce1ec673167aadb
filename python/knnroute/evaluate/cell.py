"""One evaluation cell: (dataset, router, seed) -> records and curves, as a pure function.

:func:`run_cell` splits by the seed, fits, predicts, sweeps and scores one router on one
:class:`EvalData` (plain arrays, picklable). :func:`knnroute.evaluate.runner.run_one` is the same for every
router name, also the multimodal views ``<router>@text|image|fused`` (:mod:`knnroute.evaluate.views`,
which builds on this module); the grid and its fan-outs live in :mod:`knnroute.evaluate.runner` and
:mod:`knnroute.evaluate.parallel`.

Records are flat dicts (``pandas.DataFrame(records)`` works): ``dataset``, ``router``, ``seed``, ``auc``,
``gain``, the reference AUCs used for the gain, ``c_max``, split sizes, the selection-protocol utilities
(``sel_1``, ``sel_0.5``, ``sel_0.1``, ``sel_mean``), timings (``fit_seconds``: fit including any
validation tuning; ``eval_seconds``: predict + curve + selection protocol; ``route_seconds``: one
``route(X_test, 0.5 / c_max)`` call, the Table-3 latency), and router-specific fields (``k``,
``weighting``, ``temperature``, ``shrinkage``, ``val_auc`` for kNN). The savings fields
(:mod:`knnroute.evaluate.savings`): the test set's ``best_model``, ``best_model_cost``, ``best_model_score``,
``cheapest_model``, ``cheapest_model_cost``, ``cheapest_model_score`` and, read off each router's hull,
``match_cost_share``, ``match_saving_usd_per_1k``, ``score_at_cheapest``, ``score_at_cheapest_gain``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knnroute.evaluate import appendix_d as _sel
from knnroute.evaluate import curves as _curves
from knnroute.evaluate import references as _refs
from knnroute.evaluate import savings as _savings
from knnroute.routers import tuned as _tuning
from knnroute.routers.curves import dense_lambda_grid

__all__ = [
    "DEFAULT_ROUTERS",
    "DEFAULT_SEEDS",
    "KNN_ROUTERS",
    "LEXICAL_ROUTERS",
    "REFERENCE_ROUTERS",
    "EvalData",
    "RunOutput",
    "Split",
    "available_routers",
    "input_cost_kwargs",
    "make_eval_router",
    "resolve_routers",
    "run_cell",
    "split_indices",
]

REFERENCE_ROUTERS: tuple[str, ...] = ("oracle", "random", "best-single", "single")
KNN_ROUTERS: tuple[str, ...] = ("knn-10", "knn-100", "knn-tuned")
# knn-tuned with the hybrid (dense + lexical) similarity's weight in its search (issue 21): needs prompt texts
LEXICAL_ROUTERS: tuple[str, ...] = ("knn-tuned-lex",)
DEFAULT_ROUTERS: tuple[str, ...] = REFERENCE_ROUTERS + KNN_ROUTERS
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
SELECTION_GRID = 101  # lambda-grid points for the selection routers' curves when no grid is given


@dataclass(frozen=True)
class EvalData:
    """One routing problem, ready to evaluate: embeddings and outcome tables (plain arrays).

    Attributes
    ----------
    name : str
    X : (n, d) float32, unit rows
    scores, costs : (n, M) float64, NaN = missing (scores on [0, 1], costs USD per query)
    model_names : list of str
    split : (n,) object array of "train"/"val"/"test", or None
        A split shipped with the data; ``None`` for a seeded 70/10/20 split.
    generated : bool
        True for the demo benchmark (never presented as real results).
    source : str
    meta : dict
        Optional extras; ``meta["input_cost"]`` (n, M) float64 is the known input part of each cost
        (prompt tokens x input price, :meth:`knnroute.data.RoutingDataset.input_costs`), which
        ``knn-tuned`` may add to its predicted costs (chosen on validation).
    """

    name: str
    X: NDArray[np.float32]
    scores: NDArray[np.float64]
    costs: NDArray[np.float64]
    model_names: list[str]
    split: NDArray[Any] | None = None
    generated: bool = False
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_models(self) -> int:
        return int(self.scores.shape[1])

    @classmethod
    def from_dataset(cls, ds: Any, X: NDArray[np.float32] | None = None) -> EvalData:
        """From a :class:`knnroute.data.RoutingDataset` (its embeddings unless ``X`` is given)."""
        emb = X if X is not None else ds.embeddings
        if emb is None:
            raise ValueError(f"dataset {ds.name!r} has no embeddings: embed it first (knnroute.embed)")
        known = ds.input_costs() if hasattr(ds, "input_costs") else None
        return cls(
            name=ds.name,
            X=np.ascontiguousarray(emb, dtype=np.float32),
            scores=np.asarray(ds.scores, dtype=np.float64),
            costs=np.asarray(ds.costs, dtype=np.float64),
            model_names=list(ds.model_names),
            split=np.asarray(ds.split, dtype=object) if _shipped(ds) else None,
            generated=bool(ds.generated),
            source=str(ds.source),
            meta={
                **({} if known is None else {"input_cost": known}),
                **({} if getattr(ds, "prompts", None) is None else {"texts": list(ds.prompts)}),
            },
        )


def _shipped(ds: Any) -> bool:
    """Whether ``ds.split`` came with the data (kept) rather than being a seeded split (redrawn per seed)."""
    return ds.split is not None and str(ds.meta.get("split_source", "")).startswith("shipped")


@dataclass(frozen=True)
class Split:
    """Row indices of one split; ``shipped`` when the test rows came with the data."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]
    shipped: bool = False


def split_indices(n: int, seed: int, shipped: NDArray[Any] | None = None) -> Split:
    """The split of one seed, by :mod:`knnroute.data.splits`.

    Without a shipped split: :func:`~knnroute.data.splits.random_split` (seeded 70/10/20). With one: its
    test rows are the test set, untouched; its train and val rows are pooled and a seeded 1/8 of them is
    carved as validation (:func:`~knnroute.data.splits.carve_validation`), so seeds vary the validation
    set (and the routers' support) but never the test set.
    """
    from knnroute.data.splits import SHIPPED_VAL_FRACTION, carve_validation, random_split

    if shipped is not None:
        lab = np.asarray(shipped, dtype=object)
        if lab.shape != (n,):
            raise ValueError(f"split labels have shape {lab.shape}, expected ({n},)")
        if not (lab == "test").any():
            raise ValueError("the shipped split has no 'test' rows")
        pooled = np.where(lab == "val", "train", lab).astype(object)
        lab = carve_validation(pooled, SHIPPED_VAL_FRACTION, seed)
    else:
        lab = random_split(n, seed)
    train, val, test = (np.flatnonzero(lab == s).astype(np.int64) for s in ("train", "val", "test"))
    if train.size < 1 or test.size < 1:
        raise ValueError(f"{n} prompts are too few for a train/val/test split")
    return Split(train, val, test, shipped=shipped is not None)


@dataclass
class RunOutput:
    """What one (dataset, router, seed) cell produced."""

    records: list[dict[str, Any]]
    curves: dict[str, _curves.Curve]  # router name -> curve (single models: "single:<model>")
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the tuning table


def _baseline_factories() -> dict[str, Callable[..., Any]]:
    """The learned baselines' factories: utility-prediction routers, then appendix-D selection routers."""
    try:
        from knnroute.routers.registry import BASELINE_FACTORIES, SELECTION_FACTORIES
    except ImportError:
        return {}
    return {**BASELINE_FACTORIES, **SELECTION_FACTORIES}


def available_routers() -> list[str]:
    """Every router name ``--routers`` accepts: references, kNN rows, then the learned baselines."""
    return [*DEFAULT_ROUTERS, *LEXICAL_ROUTERS, *_baseline_factories()]


def resolve_routers(spec: str | Sequence[str]) -> list[str]:
    """Parse ``"all"`` or a comma list (or a sequence) into router names; the reference rows always lead."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [s for s in names if s]
    known = available_routers()
    if "all" in names:
        return known
    # "<router>@text|image|fused": a learned router on one view of a multimodal dataset (evaluate.views)
    bad = [s for s in names if s not in known and not (
        "@" in s and s.rpartition("@")[0] in known and s.rpartition("@")[2] in ("text", "image", "fused"))]
    if bad:
        raise ValueError(f"unknown router(s) {bad}; choose from {', '.join(known)} or 'all'")
    return [*REFERENCE_ROUTERS, *[s for s in names if s not in REFERENCE_ROUTERS]]


def make_eval_router(name: str, seed: int, n_train: int) -> tuple[Any, dict[str, Any]]:
    if name in ("knn-10", "knn-100"):
        k = min(int(name.split("-")[1]), n_train)
        cfg = _tuning.KNNConfig(k=k)
        return _tuning.make_knn_router(cfg), {"k": k, "weighting": cfg.weighting, "shrinkage": 0.0}
    factories = _baseline_factories()
    if name in factories:
        return factories[name](random_state=seed), {}
    raise ValueError(f"unknown router {name!r}")


def input_cost_kwargs(
    data: EvalData, router: str, fit_rows: NDArray[np.int64], val_rows: NDArray[np.int64],
    query_rows: NDArray[np.int64],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fit kwargs, predict/route kwargs)``: the known input costs for ``knn-tuned`` (empty otherwise).

    With ``data.meta["input_cost"]``, validation may choose cost = the prompt's input cost + the neighbours'
    output cost (:class:`~knnroute.routers.tuned.TunedKNNRouter`); no other router takes them.
    """
    known = data.meta.get("input_cost")
    if router not in ("knn-tuned", "knn-tuned-lex") or known is None:
        return {}, {}
    fit_kw = {"input_cost": known[fit_rows], "input_cost_val": known[val_rows]}
    return fit_kw, {"input_cost": known[query_rows]}


def _truth(data: EvalData, rows: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    ts, tc = _curves.fill_missing(data.scores[rows], data.costs[rows])
    return ts, tc, _curves.cost_scale(tc)


def run_cell(
    data: EvalData,
    router: str,
    seed: int,
    *,
    lams: Sequence[float] | None = None,
    n_random: int = _refs.N_RANDOM,
    tuning_grid: Sequence[_tuning.KNNConfig] | None = None,
    split: Split | None = None,
) -> RunOutput:
    """Evaluate one router (not a multimodal view) on one dataset under one split seed. Pure.

    Parameters
    ----------
    data : EvalData
    router : str
        ``oracle``, ``random``, ``best-single``, ``single`` (one record per model, ``single:<model>``),
        ``knn-10``, ``knn-100``, ``knn-tuned`` or a baseline name.
    seed : int
        Split seed (and the random router's / baselines' seed).
    lams : sequence of float, optional
        Lambda grid in normalised units (score on [0, 1] per ``c_max`` of cost); each router routes at
        ``lams / c_max``. Default: the exact sweep over all lambda.
    n_random : int
        Repeats of the random router.
    tuning_grid : sequence of KNNConfig, optional
        The ``knn-tuned`` search grid (default :func:`knnroute.routers.tuned.knn_grid`).
    split : Split, optional
        Row indices to use instead of the seed's split (the cross-task evaluation of
        :mod:`knnroute.evaluate.ood` trains on one task's rows and tests on another's).
    """
    sp = split if split is not None else split_indices(data.n, seed, data.split)
    ts, tc, c_max = _truth(data, sp.test)
    lam_usd = None if lams is None else np.asarray(lams, dtype=np.float64) / c_max
    oracle = _refs.oracle_curve(ts, tc, c_max, lams=lam_usd)
    best = _refs.best_single_curve(ts, tc, c_max)
    ref = _savings.reference_models(ts, tc, data.model_names)
    base = {
        "dataset": data.name,
        "seed": int(seed),
        "auc_oracle": oracle.auc,
        "auc_best_single": best.auc,
        "c_max": c_max,
        "n_train": int(sp.train.size),
        "n_val": int(sp.val.size),
        "n_test": int(sp.test.size),
        "n_models": data.n_models,
        "split": "shipped" if sp.shipped else "seeded-70/10/20",
        "sweep": "exact" if lams is None else f"grid({len(lams)})",
        "generated": data.generated,
        **ref,
    }

    def record(name: str, curve: _curves.Curve, **fields: Any) -> dict[str, Any]:
        return {
            "router": name,
            **base,
            "auc": curve.auc,
            "gain": _curves.gain(curve.auc, best.auc, oracle.auc),
            **_savings.savings_fields(curve, ref),
            **fields,
        }

    if router == "oracle":
        return RunOutput(
            [record("oracle", oracle, **_sel.oracle_selection(ts, tc, c_max))], {"oracle": oracle}
        )
    if router == "best-single":
        return RunOutput(
            [record("best-single", best, **_sel.best_single_selection(ts, tc, c_max))], {"best-single": best}
        )
    if router == "single":
        recs, cvs = [], {}
        for m, cv in enumerate(_refs.single_model_curves(ts, tc, c_max)):
            name = f"single:{data.model_names[m]}"
            idx = np.full(ts.shape[0], m, dtype=np.int64)
            sel = _sel.selection_scores(_constant_picks(idx), ts, tc, c_max)
            recs.append(record(name, cv, model=data.model_names[m], **sel))
            cvs[name] = cv
        return RunOutput(recs, cvs)
    if router == "random":
        rr = _refs.random_router(ts, tc, c_max, seed=seed, n_random=n_random)
        cv = _curves.curve_from_points(rr.cost, rr.score, c_max)  # all repeats' points, for plots
        rec = record("random", cv, **_sel.random_selection(ts, tc, c_max, seed=seed, n_random=n_random))
        rec.update(
            auc=rr.auc,
            gain=_curves.gain(rr.auc, best.auc, oracle.auc),
            auc_repeat_std=float(rr.aucs.std()),
            n_random=n_random,
            **_savings.savings_fields_mean(rr.curves, ref),  # per repeat, averaged, as the AUC
        )
        return RunOutput([rec], {"random": cv})

    X_tr, X_va, X_te = data.X[sp.train], data.X[sp.val], data.X[sp.test]
    S_tr, C_tr = data.scores[sp.train], data.costs[sp.train]
    S_va, C_va = data.scores[sp.val], data.costs[sp.val]
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    fit_kw, pred_kw = input_cost_kwargs(data, router, sp.train, sp.val, sp.test)
    if router == "knn-tuned-lex":
        model, lex_w, X_te = _fit_lexical(data, sp, seed, tuning_grid, fit_kw)
        params: dict[str, Any] = {"lexical_weight": lex_w}
    else:
        if router == "knn-tuned":
            model = _tuning.TunedKNNRouter(grid=tuning_grid, random_state=seed)
            params = {}
        else:
            model, params = make_eval_router(router, seed, int(sp.train.size))
        model.fit(
            X_tr, S_tr, C_tr, model_names=list(data.model_names), X_val=X_va, scores_val=S_va, costs_val=C_va,
            **fit_kw,
        )
    fit_s = time.perf_counter() - t0
    if router in ("knn-tuned", "knn-tuned-lex"):
        params = {**params, **model.best_.kwargs(), "cost_model": model.cost_model_, "val_auc": model.val_auc_}
        extra["tuning"] = model.tuning_table_
    t0 = time.perf_counter()
    if getattr(model, "selection", False):
        # A selection router trains one classifier per distinct label vector along the lambda grid; the
        # evaluator's default for them is a SELECTION_GRID-point dense grid (0 and log-spaced 1e-3..1e5
        # per c_max) rather than the 1000-point one, which bounds the number of trainings per run.
        grid = lam_usd if lam_usd is not None else dense_lambda_grid(c_max, SELECTION_GRID)
        cv = _curves.router_curve(model, X_te, ts, tc, c_max=c_max, lams=grid)
        lam_sel = np.asarray(_sel.SELECTION_LAMBDAS) / c_max
        sel = _sel.selection_from_routes(np.asarray(model.route(X_te, lam_sel)), ts, tc, c_max)
    else:  # predict once; the curve and the selection protocol both route from these predictions
        s_hat, c_hat = model.predict(X_te, **pred_kw)
        cv = _curves.curve_from_predictions(s_hat, c_hat, ts, tc, c_max, lams=lam_usd)
        sel = _sel.selection_from_predictions(s_hat, c_hat, ts, tc, c_max)
    eval_s = time.perf_counter() - t0
    # Table-3 latency: one routing decision per test prompt at one lambda (0.5 per c_max), fit excluded
    t0 = time.perf_counter()
    model.route(X_te, 0.5 / c_max, **pred_kw)
    route_s = time.perf_counter() - t0
    rec = record(
        router,
        cv,
        **sel,
        **params,
        fit_seconds=fit_s,
        eval_seconds=eval_s,
        route_seconds=route_s,
        route_us_per_query=1e6 * route_s / max(1, int(sp.test.size)),
    )
    return RunOutput([rec], {router: cv}, extra)


def _fit_lexical(
    data: EvalData, sp: Split, seed: int, grid: Sequence[_tuning.KNNConfig] | None, fit_kw: dict[str, Any]
) -> tuple[Any, float, NDArray[np.float32]]:
    """``knn-tuned-lex``: ``knn-tuned`` whose search also covers the hybrid similarity
    ``w cos_dense + (1 - w) cos_lexical`` (:mod:`knnroute.embed.lexical`, fitted on the training prompts),
    ``w`` in ``{1} + LEXICAL_WEIGHTS``, chosen with the kNN settings by the same tuning AUC (ties: the dense
    similarity, then the larger ``w``). Without prompt texts it is ``knn-tuned`` (``w = 1``).

    Returns the fitted :class:`~knnroute.routers.tuned.TunedKNNRouter`, the chosen ``w`` and the test rows
    in the chosen representation.
    """
    from knnroute.embed.lexical import LEXICAL_WEIGHTS, lexical_vectors, mix

    texts = data.meta.get("texts")
    T = None if texts is None else lexical_vectors(texts, sp.train, seed=seed)
    reps: list[tuple[float, NDArray[np.float32]]] = [(1.0, data.X)]
    if T is not None:
        reps += [(w, mix(data.X, T, w)) for w in LEXICAL_WEIGHTS]
    i, model, _ = _tuning.tune_representations(
        [X for _, X in reps], sp.train, sp.val, data.scores, data.costs, model_names=list(data.model_names),
        grid=grid, random_state=seed, **fit_kw,
    )
    return model, reps[i][0], reps[i][1][sp.test]


def _constant_picks(idx: np.ndarray) -> Any:
    """A route function (lam -> model per prompt) that always returns ``idx``: a single model's row."""
    return lambda _lam: idx
