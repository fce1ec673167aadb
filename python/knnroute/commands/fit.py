"""``knnroute fit``: embed a dataset, fit the tuned kNN router, measure its budget table, save it.

The support set is the training split; k, weighting and shrinkage are chosen on the validation split
(``knn-tuned``; with prompt texts also the lexical hybrid's dense weight ``w``, as ``knn-tuned-lex``, a
router with ``w < 1`` storing its lexical model: ``--no-lexical`` keeps it dense); the budget table
(lambda -> mean cost, score and share per model) and any fallback threshold are measured on the same
validation prompts; the test split is only used to report the saved router's AUC. The file is written
atomically (see ``docs/service.md`` for the format). stdout carries only the report, as JSON (``--json``
says so explicitly); the summary lines and step lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from knnroute.commands._options import add_prices, add_quiet
from knnroute.data.spec import SPEC_HELP

__all__ = ["configure", "fit_router", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="SPEC",
                   help=f"{SPEC_HELP}; every dataset of the spec (e.g. RouterBench's tasks) is pooled into "
                   "one router, so they must share one model pool")
    p.add_argument("--out", required=True, metavar="ROUTER_FILE", help="router file to write")
    p.add_argument("--embedder", default="minilm",
                   help="minilm (default), minilm-onnx (the same model on ONNX Runtime, int8; no torch to serve), "
                   "wordllama (static: sub-millisecond prompt-to-decision), or a "
                   "sentence-transformers model folder; recorded in the router file")
    p.add_argument("--seed", type=int, default=0, help="split seed for data without a shipped split")
    p.add_argument("--k", type=int, default=None, help="fixed k (uniform weighting) instead of tuning")
    p.add_argument("--shrinkage", type=_shrinkage, default=None, metavar="X",
                   help="fixed shrinkage X >= 0 toward each model's training mean, stored in the router file "
                   "(a model's prediction is (sum of its k neighbours' weighted scores + X * its mean) / (their "
                   "weight + X)); default: tuned on validation among 0, 1, 5, 20, 100 and 1e6 (the last one "
                   "routes like the best single models). k and weighting are still tuned unless --k is given")
    p.add_argument("--half-life", type=_shrinkage, default=0.0, metavar="H",
                   help="online learning: a gateway feedback row H feedbacks old weighs half (fitted rows are "
                   "time 0); stored in the router file (default 0: no decay; docs/online-learning.md)")
    p.add_argument("--explore", default=None, choices=["greedy", "uniform", "thompson", "ucb"],
                   help="online learning: the exploration policy the gateway uses for routed requests, stored "
                   "in the router file (default: knnroute.gateway.learning.DEFAULT_POLICY)")
    p.add_argument("--explore-scale", type=_shrinkage, default=None, metavar="X",
                   help="thompson / ucb: the posterior standard deviation's multiplier (default: the policy's)")
    p.add_argument("--precision", default="f32", choices=["f32", "f16", "bf16"],
                   help="storage precision of the embeddings in the file (default f32)")
    p.add_argument("--scan-precision", default="f32", choices=["f32", "bf16", "f16", "int8"],
                   help="copy a single query scans when serving (exact results for every choice; int8 is the "
                   "fastest, see bench/README.md); recorded in the file (default f32)")
    p.add_argument("--default-lambda", type=float, default=0.0,
                   help="lambda used when a request names neither lambda nor max_cost (score per USD; default "
                   "0 = the model with the highest predicted score whatever its cost); fit prints what it gives "
                   "on the validation prompts")
    p.add_argument("--no-text-norm", action="store_true",
                   help="embed prompts as they are (default: case, punctuation, whitespace, politeness and "
                   "one-letter typos normalised at fit and route time; docs/guarantees.md)")
    p.add_argument("--no-lexical", action="store_true",
                   help="dense similarity only: do not try the lexical hybrid (w cos_dense + (1 - w) "
                   "cos_lexical, TF-IDF LSA fitted on the training prompts; w in {1, 0.75, 0.5} chosen on "
                   "validation, stored in the router file when w < 1)")
    p.add_argument("--json", action="store_true",
                   help="stdout carries only the report, as JSON (so 'fit ... > report.json' is valid JSON); the "
                   "human-readable summary and step lines go to stderr. This is also what fit does without "
                   "--json: the flag lets scripts say so")
    p.add_argument("--fallback-model", default=None, help="model to use when the router is unsure")
    p.add_argument("--fallback-distance-quantile", type=float, default=None, metavar="Q",
                   help="fall back for prompts farther from their k-th neighbour than a share Q of "
                   "validation prompts (e.g. 0.95)")
    p.add_argument("--fallback-min-agreement", type=float, default=None, metavar="A",
                   help="fall back when fewer than A of the neighbours agree with the routed model")
    pol = p.add_mutually_exclusive_group()
    pol.add_argument("--quality-floor", type=_unit("--quality-floor", 0.0, False), default=None, metavar="A",
                     help="default policy stored in the file: the cheapest lambda certified to keep mean quality >= "
                     "A x the best single model's, with probability >= 1 - delta (docs/guarantees.md); a request "
                     "may still name its own lambda or policy")
    pol.add_argument("--max-mean-cost", type=_shrinkage, default=None, metavar="USD",
                     help="default policy: the best lambda certified to keep the mean cost per request <= USD")
    pol.add_argument("--strong-share", type=_unit("--strong-share", 0.0, True), default=None, metavar="P",
                     help="default policy: at most a share P of requests to the most expensive model (RouteLLM's "
                     "dial; no bound)")
    p.add_argument("--delta", type=_unit("--delta", 0.0, False), default=0.1, metavar="D",
                   help="the guarantee's failure probability over the calibration draw (default 0.1)")
    add_quiet(p)
    add_prices(p)


def _unit(flag: str, lo: float, lo_ok: bool) -> Any:
    """An argparse type: a number in (lo, 1] (or [lo, 1] with ``lo_ok``), else one error line."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not (math.isfinite(v) and (v >= lo if lo_ok else v > lo) and v <= 1.0):
            raise argparse.ArgumentTypeError(f"{flag} must be in {'[' if lo_ok else '('}{lo:g}, 1], got {text}")
        return v
    return parse


def _shrinkage(text: str) -> float:
    """``--shrinkage``: a finite number >= 0 (argparse turns the ``ValueError`` into a one-line usage error)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(x) and x >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return x


def fit_router(
    data: str,
    embedder: str = "minilm",
    seed: int = 0,
    k: int | None = None,
    default_lambda: float = 0.0,
    fallback_model: str | None = None,
    fallback_distance_quantile: float | None = None,
    fallback_min_agreement: float | None = None,
    progress: bool = True,
    scan_precision: str = "f32",
    prices: str | None = None,
    lexical: bool = True,
    shrinkage: float | None = None,
    policy: dict[str, float] | None = None,
    delta: float = 0.1,
    text_norm: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Fit a :class:`~knnroute.production.ProductionRouter` on ``data``; returns it and a report dict.

    ``data`` is a data spec (:mod:`knnroute.data.spec`); all its datasets are pooled into one
    (:func:`knnroute.data.spec.pool`: they must share one model pool, else ``ValueError``). ``prices``: a
    price table file for long-format data with token counts (``--prices``). With ``progress``, each step
    is named on stderr and embedding shows a bar (on a terminal).

    With ``lexical`` (default), prompt texts, our own embedding and tuned k, the dense weight ``w`` of the
    hybrid similarity ``w cos_dense + (1 - w) cos_lexical`` is tuned with the kNN settings as the
    evaluator's ``knn-tuned-lex`` does (``w`` in ``{1} + LEXICAL_WEIGHTS``, validation + leave-one-out AUC;
    ties: dense, then the larger ``w``); when ``w < 1`` the router embeds prompts with a
    :class:`~knnroute.embed.lexical.HybridLexicalEmbedder` stored in the file. The report says which ``w``.

    ``shrinkage`` (``--shrinkage``): fixed instead of tuned; the tuner then searches k and weighting with
    this shrinkage only, so the saved router always has it.

    Guarantees (``docs/guarantees.md``): the router's operating points are certified on the test split (held
    out from fitting and from tuning; the validation split when there is no test split) at ``delta``, stored
    in the file, and reported for the quality floors 0.90, 0.95 and 0.99; ``policy`` (one of
    ``quality_floor``, ``max_mean_cost``, ``strong_share``) becomes the file's default policy.
    """
    from knnroute._progress import step
    from knnroute.data.splits import carve_validation
    from knnroute.embed.prepare import prepare_data
    from knnroute.evaluate import curves
    from knnroute.production import FallbackPolicy, ProductionRouter
    from knnroute.production.budgets import describe_default
    from knnroute.routers.knn import KNNRouter
    from knnroute.routers.tuned import MIN_VAL_PROMPTS, KNNConfig, knn_grid, tune_representations

    if shrinkage is not None and not (math.isfinite(shrinkage) and shrinkage >= 0):
        raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage!r}")
    t0 = time.perf_counter()
    step(f"fit: loading {data} and embedding its prompts ({embedder}; cached after the first run)",
         enabled=progress)
    (ds,) = prepare_data(data, embedder, seed=seed, pooled=True, progress=progress, prices=prices)
    t_embed = time.perf_counter() - t0
    assert ds.split is not None  # pooled data always carries a split
    if not (ds.split == "val").any():
        ds = ds.with_split(carve_validation(ds.split, seed=seed))
    tr, va, te = (ds.split_index(s) for s in ("train", "val", "test"))
    warnings: list[str] = []
    if k is None and va.size < MIN_VAL_PROMPTS:
        warnings.append(
            f"tuning rests on {va.size} validation prompts (fewer than {MIN_VAL_PROMPTS}): the chosen k, "
            "weighting and shrinkage are noisy; give more data or a fixed --k"
        )
    for w in warnings:  # printed even with -q: it changes what the router is worth
        print(f"knnroute fit: warning: {w}", file=sys.stderr)
    X, S, C = ds.embeddings, ds.scores, ds.costs
    assert X is not None  # prepare_data embeds every dataset
    norm, norm_texts = None, None
    if text_norm and ds.prompts is not None and ds.meta.get("embed_stats") is not None:
        step("fit: embedding the normalised prompts (docs/guarantees.md: robustness)", enabled=progress)
        X, norm, norm_texts = _normalised(ds, tr, embedder, progress)
    t1 = time.perf_counter()
    what = "k, weighting and shrinkage" if shrinkage is None else f"k and weighting (shrinkage {shrinkage:g})"
    step(f"fit: {'tuning ' + what + ' on' if k is None else 'fitting k=' + str(k) + ';'} "
         f"{tr.size} training / {va.size} validation prompts ({time.perf_counter() - t0:.1f} s so far)",
         enabled=progress)
    hybrid: Any = None
    lex_report: dict[str, Any] = {"lexical_weight": 1.0}
    if k is None:
        reps: list[tuple[float, Any, Any]] = [(1.0, X, None)]
        if lexical:
            reps += _lexical_reps(ds, X, tr, embedder, seed, lex_report, progress, norm_texts)
        elif ds.prompts is not None:
            lex_report["lexical_note"] = "off (--no-lexical)"
        # ties keep the dense similarity, then the larger w (the order of reps)
        grid = None if shrinkage is None else knn_grid(max(1, tr.size), shrinkages=(shrinkage,))
        i, tuned, aucs = tune_representations(
            [X_w for _, X_w, _ in reps], tr, va, S, C, model_names=ds.model_names, grid=grid, random_state=seed
        )
        lex_report["lexical_weight"], X, hybrid = reps[i]
        if len(reps) > 1:
            lex_report["lexical_val_auc"] = {f"{w:g}": a for (w, _, _), a in zip(reps, aucs, strict=True)}
        knn, best = tuned.router_, tuned.best_
        val_auc = tuned.val_auc_
    else:
        if lexical and ds.prompts is not None:
            lex_report["lexical_note"] = "off: a fixed --k is not tuned (dense similarity)"
        knn = KNNRouter(k=min(k, tr.size), shrinkage=shrinkage or 0.0).fit(
            X[tr], S[tr], C[tr], model_names=ds.model_names
        )
        best, val_auc = KNNConfig(k=knn.k, shrinkage=float(knn.shrinkage)), None
    if scan_precision != "f32":  # same neighbours (exact), faster single-query scans when serving
        knn = KNNRouter(k=knn.k, weighting=knn.weighting, temperature=knn.temperature,
                        shrinkage=knn.shrinkage, precision=scan_precision).fit(
            X[tr], S[tr], C[tr], model_names=ds.model_names
        )
    t_fit = time.perf_counter() - t1
    from knnroute.embed.prompt import PromptEncoder

    encoder = PromptEncoder(
        hybrid if hybrid is not None else (
            ds.meta.get("embedder") and {"identity": ds.meta["embedder"], "spec": _spec(embedder)}
        ) or None,
        ds.meta.get("prefix_stripper"), text_norm=norm,
    )
    prod = ProductionRouter(knn, ids=[str(i) for i in ds.ids[tr]], prices=ds.prices, embedder=encoder,
                            default_lambda=default_lambda)
    step(f"fit: measuring the budget table on {va.size} validation prompts ({time.perf_counter() - t0:.1f} s "
         "so far)", enabled=progress)
    prod.budget_table(X[va], S[va], C[va], source=f"{ds.name}: validation split ({va.size} prompts)")
    if fallback_model is not None:
        if fallback_distance_quantile is not None:
            prod.calibrate_fallback(fallback_model, X[va], distance_quantile=fallback_distance_quantile)
        if fallback_min_agreement is not None or fallback_distance_quantile is None:
            cur = prod.fallback
            max_distance = cur.max_distance if cur else None
            prod.set_fallback(FallbackPolicy(fallback_model, max_distance, fallback_min_agreement))
    # the saved router's test AUC, for the record (never used to choose anything)
    report: dict[str, Any] = {
        "dataset": ds.name,
        "generated": bool(ds.generated),
        "n_train": int(tr.size),
        "n_val": int(va.size),
        "n_test": int(te.size),
        "models": ds.model_names,
        "config": best.kwargs(),
        "scan_precision": scan_precision,
        "val_auc": val_auc,
        "budget_points": len(prod.budget.lams) if prod.budget is not None else 0,
        "embedder": ds.meta.get("embedder") if hybrid is None else hybrid.identity,
        **lex_report,
        "default_lambda": default_lambda,
        "default_lambda_gives": describe_default(default_lambda, prod.budget),
        "warnings": warnings,
        "embed_seconds": round(t_embed, 2),
        "fit_seconds": round(t_fit, 2),
    }
    if te.size:
        ts, tc = curves.fill_missing(S[te], C[te])
        sh, ch = prod.predict(X[te])
        report["test_auc"] = curves.curve_from_predictions(sh, ch, ts, tc, curves.cost_scale(tc)).auc
    if prod.fallback is not None:
        report["fallback"] = prod.fallback.to_dict()
    prod.meta = {k: v for k, v in report.items() if k not in ("embed_seconds", "fit_seconds", "default_lambda_gives")}
    prod.meta["split_source"] = ds.meta.get("split_source")
    cal, cal_name = (te, "test") if te.size else (va, "validation")
    step(f"fit: certifying operating points on the {cal.size} {cal_name} prompts (delta {delta:g})",
         enabled=progress)
    cal = cal[np.random.default_rng(seed).permutation(cal.size)]  # an order that does not depend on outcomes
    table = prod.calibrate_guarantee(X[cal], S[cal], C[cal], delta=delta)
    b = prod.calibrate_bounds(X[cal], S[cal], C[cal], level=0.9)  # per-decision bounds (production/bounds.py)
    report["bounds"] = {"calibration": f"{cal_name} split ({cal.size} prompts)", "level": b.level,
                        "text_norm": prod.encoder.text_norm is not None}
    report["guarantee"] = {"calibration": f"{cal_name} split ({cal.size} prompts)", "delta": delta,
                           "best_model": table.best_model,
                           "floors": {f"{a:g}": table.for_floor(a).to_dict() for a in (0.9, 0.95, 0.99)}}
    if policy:
        cert = table.resolve(**policy)
        assert cert is not None  # policy names one
        report["policy"] = cert.to_dict()
        prod.meta["default_policy"] = dict(policy)
    return prod, report


def _normalised(ds: Any, tr: Any, embedder: str, progress: bool) -> tuple[Any, Any, list[str]]:
    """``(X, normaliser, texts)``: the prompts prefix-stripped as embedded, normalised by a
    :class:`~knnroute.embed.textnorm.TextNormaliser` fitted on the training prompts, embedded (cached)."""
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.embed import embed_texts
    from knnroute.embed.textnorm import TextNormaliser

    texts = list(ds.prompts)
    state = ds.meta.get("prefix_stripper")
    if state and state.get("prefixes"):
        texts = PrefixStripper.from_dict(state).transform(texts, None if ds.groups is None else list(ds.groups))
    norm = TextNormaliser.fit([texts[i] for i in tr])
    texts = norm.transform(texts)
    return embed_texts(texts, _spec(embedder), progress=progress), norm, texts


def _lexical_reps(ds: Any, X: Any, tr: Any, embedder: str, seed: int, report: dict[str, Any],
                  progress: bool, texts_in: list[str] | None = None) -> list[tuple[float, Any, Any]]:
    """``(w, hybrid support rows, HybridLexicalEmbedder)`` for each ``w`` in ``LEXICAL_WEIGHTS``; none when
    the data has no prompt texts, was not embedded here (precomputed vectors: nothing to rebuild at serving
    time), scikit-learn is missing, or the training prompts share no term. Says why in ``report``."""
    from knnroute._progress import step

    if ds.prompts is None:
        return []
    if ds.meta.get("embed_stats") is None or not ds.meta.get("embedder"):
        report["lexical_note"] = "off: precomputed embeddings (no embedder to pair with)"
        return []
    import importlib.util

    if importlib.util.find_spec("scipy") is None or importlib.util.find_spec("threadpoolctl") is None:
        # the lexical fit needs SciPy (it no longer imports scikit-learn, which brings both)
        report["lexical_note"] = "off: scikit-learn is not installed (pip install '.[eval]' in the knnroute checkout)"
        return []
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.embed.encoders import get_embedder
    from knnroute.embed.lexical import FIT_MAX_FEATURES, LEXICAL_WEIGHTS, HybridLexicalEmbedder, LexicalModel

    step(f"fit: fitting the lexical model (TF-IDF LSA) on {tr.size} training prompts", enabled=progress)
    texts = list(ds.prompts)
    state = ds.meta.get("prefix_stripper")
    if texts_in is not None:  # already stripped and normalised, as served prompts are
        texts = texts_in
    elif state and state.get("prefixes"):  # the texts the embedder saw, as served prompts are stripped
        texts = PrefixStripper.from_dict(state).transform(texts, None if ds.groups is None else list(ds.groups))
    lex = LexicalModel.fit([texts[i] for i in tr], seed=seed, max_features=FIT_MAX_FEATURES)
    if lex is None:
        report["lexical_note"] = "off: the training prompts share no term"
        return []
    dense = get_embedder(_spec(embedder))
    if dense.identity != ds.meta["embedder"]:
        report["lexical_note"] = "off: the embedder does not rebuild with the identity the data was embedded with"
        return []
    report.update(lexical_terms=lex.n_terms, lexical_dim=lex.dim)
    out = []
    L = lex.transform(texts)  # once: each w only mixes it with the dense rows
    for w in LEXICAL_WEIGHTS:
        h = HybridLexicalEmbedder(dense, lex, w)
        out.append((w, h.combine(X, texts, lexical_rows=L), h))
    return out


def _spec(embedder: str) -> str:
    return "minilm" if embedder in ("minilm", "all-MiniLM-L6-v2") else embedder


def _online(prod: Any, report: dict[str, Any], args: argparse.Namespace) -> None:
    """--half-life and the exploration policy, stored in the router file (meta["explore"], knn.half_life)."""
    from dataclasses import replace

    from knnroute.gateway.learning import DEFAULT_POLICY
    from knnroute.routers.explore import ExplorePolicy

    pol = DEFAULT_POLICY if args.explore is None else ExplorePolicy(args.explore)
    if args.explore_scale is not None:
        pol = replace(pol, scale=float(args.explore_scale))
    if args.half_life:
        prod.half_life = float(args.half_life)
    prod.meta["explore"] = report["explore"] = pol.to_dict()
    report["half_life"] = float(args.half_life)


def run(args: argparse.Namespace) -> int:
    try:
        prod, report = fit_router(
            args.data,
            embedder=args.embedder,
            seed=args.seed,
            k=args.k,
            default_lambda=args.default_lambda,
            fallback_model=args.fallback_model,
            fallback_distance_quantile=args.fallback_distance_quantile,
            fallback_min_agreement=args.fallback_min_agreement,
            progress=not args.no_progress,
            scan_precision=args.scan_precision,
            prices=args.prices,
            lexical=not args.no_lexical,
            shrinkage=args.shrinkage,
            policy={k: v for k, v in (("quality_floor", args.quality_floor), ("max_mean_cost", args.max_mean_cost),
                                      ("strong_share", args.strong_share)) if v is not None} or None,
            delta=args.delta,
            text_norm=not args.no_text_norm,
        )
        _online(prod, report, args)
        t0 = time.perf_counter()
        path = prod.save(args.out, precision=args.precision)
    except (ValueError, FileNotFoundError) as e:
        print(f"knnroute fit: error: {e}", file=sys.stderr)
        return 2
    report["file"] = str(path)
    report["file_bytes"] = path.stat().st_size
    report["save_seconds"] = round(time.perf_counter() - t0, 3)
    human = sys.stderr  # stdout is the JSON report alone (with or without --json)
    if report["generated"]:
        print("NOTE: fitted on the GENERATED demo benchmark (not real data)", file=human)
    print(f"fitted {prod!r}", file=human)
    if "policy" in report:
        print(f"default: the policy {report['policy']['policy']}={report['policy']['value']:g} (below) for requests "
              "that name no lambda, max_cost or policy", file=human)
    else:
        print(f"default: {report['default_lambda_gives']}", file=human)
    lw = report.get("lexical_weight", 1.0)
    print(f"similarity: {'dense only' if lw == 1.0 else f'lexical hybrid, dense weight w={lw:g}'}"
          + (f" ({report['lexical_note']})" if report.get("lexical_note") else ""), file=human)
    from knnroute.production.guarantee import Certified

    g = report["guarantee"]
    print(f"guarantees, certified on the {g['calibration']}, best single model {g['best_model']}:", file=human)
    for c in [*g["floors"].values(), *([report["policy"]] if "policy" in report else [])]:
        print(f"  {Certified(**c).describe()}", file=human)
    if "policy" in report:
        print("  (the last line is the file's default policy)", file=human)
    b = report["bounds"]
    print(f"bounds: each decision carries per-model score and cost intervals at {b['level']:.0%} coverage, calibrated "
          f"on the {b['calibration']}; text normalisation {'on' if b['text_norm'] else 'off'} "
          "(docs/guarantees.md)", file=human)
    print(json.dumps(report, indent=2))
    return 0
