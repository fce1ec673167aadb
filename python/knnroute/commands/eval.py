"""``knnroute eval``: the main command (the README's first example).

With no arguments it evaluates the built-in generated demo benchmark (labelled as generated). ``--data``
takes a data spec (:mod:`knnroute.data.spec`, the same on every command): ``demo``, ``all`` (every real
dataset found under the data directory), a registered dataset name (``routerbench``, ``llmrouter``, ...),
or a path (a file in a supported format, or a folder such as ``routerbench-0shot-subset`` whose per-task
files become separate datasets); several, comma separated.

Output: a table per dataset (routers x AUC, gain, selection utility; mean ± std over seeds) with a key to
its columns and rows underneath, compact routers x datasets matrices, and the SAVINGS block (per dataset
and router: the cost share at which the router matches the best single model's quality and the dollars that
saves per 1,000 queries, and its quality at the cheapest model's cost; :mod:`knnroute.evaluate.savings`) on
stdout; ``--json PATH`` writes every number with the conventions; ``--plot DIR`` draws one PNG per dataset
(the first seed's curves, hulls and reference curves; the legend gives the table's mean ± std, then that
seed's AUC) and ``DIR/savings.png`` over all datasets.

Long steps (embedding, the evaluation grid) show progress bars on a terminal; ``-q`` turns them off. Data
with token counts instead of a cost column takes ``--prices FILE``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from knnroute.commands._options import add_prices, add_quiet
from knnroute.data.spec import SPEC_HELP

__all__ = ["configure", "load_eval_data", "parse_lambdas", "run"]

# With images in the data (MATH-V) the default also adds knn-100 / knn-tuned @image and @fused rows.
_DEFAULT_ROUTERS = "knn-10,knn-100,knn-tuned,knn-tuned-lex"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``eval`` options to ``p``."""
    p.add_argument("--data", default="demo", metavar="SPEC", help=f"{SPEC_HELP} (default: demo)")
    p.add_argument(
        "--routers",
        default=_DEFAULT_ROUTERS,
        metavar="LIST",
        help="comma list or 'all' (reference rows oracle, random, best-single and single models always "
        "included); names: oracle, random, best-single, knn-10, knn-100, knn-tuned, knn-tuned-lex (knn-tuned "
        "also searching a dense + lexical TF-IDF similarity; needs prompt texts), and the learned baselines "
        "when installed; on data with images, <router>@text|image|fused picks the input view "
        "(fused: image weight chosen on validation)",
    )
    p.add_argument("--seeds", type=int, default=5, metavar="N", help="split seeds 0..N-1 (default 5)")
    p.add_argument(
        "--lambdas",
        default="exact",
        metavar="SPEC",
        help="exact (default: every breakpoint of the routing sweep), grid:N (the dense protocol: 0 and N-1 "
        "log-spaced normalised lambdas in [1e-3, 1e5]) or a comma list of normalised lambdas "
        "(score per c_max of cost)",
    )
    p.add_argument(
        "--json", dest="json_path", metavar="PATH", help="write all results and conventions as JSON"
    )
    p.add_argument(
        "--markdown", dest="markdown_path", metavar="PATH",
        help="write the README's tables as Markdown: AUC mean ± std per router and dataset with the average "
        "and pooled gain, and the savings of knn-tuned / knn-tuned-lex per dataset",
    )
    p.add_argument("--plot", dest="plot_dir", metavar="DIR",
                   help="write one cost-quality PNG per dataset and savings.png over all of them")
    p.add_argument("--embedder", default="minilm",
                   help="embedder for datasets without embeddings: minilm (default), minilm-onnx (ONNX Runtime, "
                   "int8; minilm-onnx-fp32), wordllama (static, "
                   "fast), or a sentence-transformers model folder")
    p.add_argument("--n-random", type=int, default=10, help="repeats of the random router (default 10)")
    p.add_argument(
        "--diagnostics",
        action="store_true",
        help="also compute locality (agreement vs distance, r), TwoNN intrinsic dimension and the "
        "confidence check per dataset",
    )
    p.add_argument(
        "--no-singles", action="store_true", help="leave the single-model rows out of the printed table"
    )
    add_quiet(p)
    add_prices(p)
    p.add_argument(
        "--jobs", type=int, default=None, metavar="N",
        help="worker processes for the (dataset x router x seed) grid (default: every CPU of this "
        "machine; 1 = serial in this process); same numbers as serial",
    )
    p.add_argument(
        "--ray", action="store_true",
        help="run the (dataset x router x seed) grid as Ray tasks (the 'ray' extra); same numbers as locally",
    )
    p.add_argument("--ray-address",
                   help="with --ray: the Ray cluster to connect to (default: start a local one)")
    p.add_argument(
        "--ood",
        action="store_true",
        help="also the cross-task table (paper Table 4): train on each dataset of --data, test on each "
        "(they must share one model pool, e.g. --data routerbench); ID = same task, OOD = the others",
    )


def parse_lambdas(spec: str) -> list[float] | None:
    """``exact`` -> None; ``grid:N`` -> the dense grid (normalised); else a comma list of floats >= 0."""
    s = spec.strip().lower()
    if s in ("", "exact"):
        return None
    if s.startswith("grid"):
        import numpy as np

        from knnroute.routers.curves import dense_lambda_grid

        n = int(s.split(":", 1)[1]) if ":" in s else 1000
        return [float(x) for x in np.asarray(dense_lambda_grid(1.0, n))]
    vals = [float(x) for x in spec.split(",") if x.strip()]
    if not vals or any(not v >= 0 for v in vals):
        raise ValueError(f"--lambdas: expected 'exact', 'grid:N' or non-negative numbers, got {spec!r}")
    return sorted(vals)


def load_eval_data(spec: str, embedder: str = "minilm", progress: bool = True,
                   prices: str | None = None) -> list[tuple[Any, Any]]:
    """Load ``spec`` (a data spec, see :mod:`knnroute.data.spec`) and embed what has no embeddings.

    ``prices``: a price table file for the spec's long-format files with token counts (``--prices``).

    Returns ``(EvalData, RoutingDataset)`` pairs; duplicate names get a ``#2``, ``#3``... suffix.
    """
    import dataclasses

    from knnroute.embed.prepare import prepare_data
    from knnroute.evaluate import views
    from knnroute.evaluate.runner import EvalData

    seen: dict[str, int] = {}
    out = []
    for ds in prepare_data(spec, embedder, progress=progress, prices=prices):
        if views.is_multimodal(ds):  # text + image (MATH-V): text block as X, image block in meta
            ed, ds = views.eval_data(ds, embedder=embedder, progress=progress)
        else:
            ed = EvalData.from_dataset(ds)
        if ed.name in seen:  # two datasets with one name (e.g. the same task from two sources)
            seen[ed.name] += 1
            ed = dataclasses.replace(ed, name=f"{ed.name}#{seen[ed.name]}")
        else:
            seen[ed.name] = 1
        out.append((ed, ds))
    return out


def _diagnostics(ed: Any, ds: Any, seed: int) -> dict[str, Any]:
    from knnroute.evaluate import diagnostics as dg
    from knnroute.evaluate.runner import split_indices

    loc = dg.locality(ed.X, ed.scores, seed=seed)
    sp = split_indices(ed.n, seed, ed.split)
    conf = dg.confidence_check(
        ed.X[sp.train],
        ed.scores[sp.train],
        ed.costs[sp.train],
        ed.X[sp.test],
        ed.scores[sp.test],
        ed.costs[sp.test],
    )
    return {
        "dataset": ed.name,
        "seed": seed,
        "locality": loc.to_dict(),
        "twonn": dg.twonn(ed.X),
        "ambient_dim": int(ed.X.shape[1]),
        "confidence": conf,
        "generated": ed.generated,
    }


def _warn_small_validation(data: Sequence[Any], routers: Sequence[str]) -> None:
    """One stderr line per dataset whose validation split (seed 0) is too small for the tuned routers."""
    from knnroute.evaluate.cell import split_indices
    from knnroute.routers.tuned import MIN_VAL_PROMPTS

    tuned = [r for r in routers if "tuned" in r]
    if not tuned:
        return
    for ed in data:
        try:
            n_val = split_indices(ed.n, 0, ed.split).val.size
        except ValueError:
            continue  # too small to split at all: the evaluation says so itself
        if n_val < MIN_VAL_PROMPTS:
            print(f"knnroute eval: warning: {ed.name}: {', '.join(tuned)} tune on {n_val} validation prompts "
                  f"(fewer than {MIN_VAL_PROMPTS}): their choices are noisy", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Execute ``knnroute eval``; returns the exit status."""
    import numpy as np

    from knnroute.evaluate import curves as _curves
    from knnroute.evaluate import report
    from knnroute.evaluate.runner import resolve_routers

    t_start = time.perf_counter()
    progress = not args.no_progress
    try:
        routers = resolve_routers(args.routers)
        lams = parse_lambdas(args.lambdas)
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        if getattr(args, "jobs", None) is not None and args.jobs < 1:
            raise ValueError("--jobs must be >= 1")
        pairs = load_eval_data(args.data, embedder=args.embedder, progress=progress,
                               prices=getattr(args, "prices", None))
    except (ValueError, FileNotFoundError) as exc:
        print(f"knnroute eval: error: {exc}", file=sys.stderr)
        return 2
    data = [ed for ed, _ in pairs]
    _warn_small_validation(data, routers)
    if args.routers == _DEFAULT_ROUTERS and any("image_X" in ed.meta for ed in data):
        from knnroute.evaluate.views import MULTIMODAL_ROUTERS  # image-only and fused rows

        routers = [*routers, *[r for r in MULTIMODAL_ROUTERS if r not in routers]]
    seeds = list(range(args.seeds))
    t_eval = time.perf_counter()
    if getattr(args, "ray", False):
        from knnroute.evaluate.ray_eval import evaluate_ray

        res = evaluate_ray(data, routers, seeds, lams=lams, n_random=args.n_random, progress=progress,
                           address=getattr(args, "ray_address", None))
    else:
        from knnroute.evaluate.parallel import evaluate_processes

        res = evaluate_processes(data, routers, seeds, jobs=getattr(args, "jobs", None), lams=lams,
                                 n_random=args.n_random, progress=progress)
    eval_seconds = time.perf_counter() - t_eval
    summary = report.summarise(res.records)

    if any(d.generated for d in data):
        print(
            "NOTE: GENERATED demo benchmark (synthetic prompts and outcomes): a smoke test, not real results."
        )
    print(
        f"knnroute eval: {len(data)} dataset(s) x {len(routers)} router rows x {len(seeds)} seed(s); "
        f"curves: {'exact lambda sweep' if lams is None else f'{len(lams)}-point lambda grid'}; "
        f"numerics: {_curves.backend()}\n"
    )
    print(report.format_table(summary, singles=not args.no_singles))
    print(report.format_notes(len(seeds)))
    print("\nAUC per dataset (mean over seeds; avg = unweighted mean over the datasets)")
    print(report.format_matrix(summary, "auc"))
    print("\nGAIN per dataset (share of the best-single -> oracle headroom; mean over seeds)")
    print(report.format_matrix(summary, "gain"))
    savings = report.format_savings(summary)
    if savings:
        print("\nSAVINGS per dataset (mean ± std over seeds): the cost at which each router matches the best "
              "single model's\nquality, and the quality it reaches at the cheapest model's cost")
        print(savings)
        print(report.format_savings_notes())
    timing = report.format_timing(summary)
    if timing:
        print("\nfit and routing time per router (s; mean over seeds, summed over datasets; route = one "
              "route(X_test, lambda) call per test set)")
        print(timing)

    ood_records: list[dict[str, Any]] = []
    ood_summary: list[dict[str, Any]] = []
    if getattr(args, "ood", False):
        from knnroute.evaluate import ood as _ood

        try:
            ood_records = _ood.evaluate_ood(
                data, routers, seeds, lams=lams, n_random=args.n_random, progress=progress,
                jobs=getattr(args, "jobs", None),
            )
        except ValueError as exc:
            print(f"knnroute eval: error: --ood: {exc}", file=sys.stderr)
            return 2
        ood_summary = _ood.summarise_ood(ood_records)
        print("\nin-distribution vs out-of-distribution AUC (paper Table 4): mean over (train, test) pairs, "
              "mean ± std over seeds")
        print(_ood.format_ood(ood_summary, ood_records))

    diags: list[dict[str, Any]] = []
    if args.diagnostics:
        for ed, ds in pairs:
            d = _diagnostics(ed, ds, seeds[0])
            diags.append(d)
        print("\ndiagnostics (paper §7-8): locality r over 10 distance bins, TwoNN intrinsic dimension")
        for d in diags:
            c = d["confidence"]
            print(
                f"  {d['dataset']:<28} r={d['locality']['r']:+.3f}  TwoNN={d['twonn']:.1f} "
                f"(ambient {d['ambient_dim']})  regret@lam=0.5: agree-high {c['regret_high_agreement']:.2f} "
                f"vs low {c['regret_low_agreement']:.2f}; near {c['regret_near']:.2f} "
                f"vs far {c['regret_far']:.2f}"
            )

    plotted = seeds[0]
    if args.plot_dir:
        from knnroute.evaluate.plots import plot_dataset

        for ed in data:
            cvs = {r: cv for (d, r, s), cv in res.curves.items() if d == ed.name and s == plotted}
            n_test = next(
                (r["n_test"] for r in res.records if r["dataset"] == ed.name and r["seed"] == plotted), 0
            )
            path = plot_dataset(
                ed.name,
                cvs,
                args.plot_dir,
                generated=ed.generated,
                subtitle=f"seed {plotted}: {n_test} test prompts (of {ed.n}) x {ed.n_models} models; "
                + ("exact lambda sweep" if lams is None else f"{len(lams)}-point lambda grid")
                + f"; legend: AUC mean ± std over {len(seeds)} seed(s) (as in the table), then seed {plotted}'s",
                mean_auc={r["router"]: (r["auc_mean"], r["auc_std"]) for r in summary if r["dataset"] == ed.name},
                seed_label=f"seed {plotted}",
            )
            print(f"plot: {path}")
        from knnroute.evaluate.plots import plot_savings

        path = plot_savings(
            summary, args.plot_dir,
            subtitle=f"mean ± std over {len(seeds)} seed(s); "
            + ("exact lambda sweep" if lams is None else f"{len(lams)}-point lambda grid"),
        )
        print(f"plot: {path}")

    if args.json_path:
        from knnroute import __version__

        curves_json = []
        for (d, r, s), cv in res.curves.items():
            curves_json.append({"dataset": d, "router": r, "seed": s, **cv.to_dict(points=s == plotted)})
        tuning = [
            {"dataset": d, "router": r, "seed": s, **row}
            for (d, r, s), extra in res.extras.items()
            for row in extra.get("tuning", [])
        ]
        payload = {
            "conventions": {
                **report.CONVENTIONS,
                "sweep": "exact" if lams is None else "grid",
                "lambdas_normalised": lams,
                "seeds": seeds,
                "n_random": args.n_random,
                "embedder": args.embedder,
                "curve_points": f"full points for seed {plotted}; hull vertices for every seed",
            },
            "results": res.records,
            "summary": summary,
            "curves": curves_json,
            "tuning": tuning,
            "datasets": [
                {
                    "name": ed.name,
                    "n": ed.n,
                    "n_models": ed.n_models,
                    "models": ed.model_names,
                    "generated": ed.generated,
                    "source": ed.source,
                    "split": "shipped" if ed.split is not None else "seeded 70/10/20",
                    "embedder": ds.meta.get("embedder"),
                    "embedded_text": ds.meta.get("prefix_stripped"),
                    "missing_score_cells": int(np.isnan(ed.scores).sum()),
                    "missing_cost_cells": int(np.isnan(ed.costs).sum()),
                }
                for ed, ds in pairs
            ],
            "diagnostics": diags,
            **({"ood": {"summary": ood_summary, "results": ood_records}} if ood_records else {}),
            "meta": {
                "knnroute_version": __version__,
                "numerics": _curves.backend(),
                "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                "eval_seconds": eval_seconds,
                "total_seconds": time.perf_counter() - t_start,
                "python": platform.python_version(),
                "numpy": np.__version__,
            },
        }
        path = report.write_json(args.json_path, payload)
        print(f"json: {path}")
    if args.markdown_path:
        from pathlib import Path

        md = Path(args.markdown_path)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(report.format_markdown(summary), encoding="utf-8")
        print(f"markdown: {md}")
    print(f"\ndone in {time.perf_counter() - t_start:.1f} s (evaluation {eval_seconds:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m knnroute.commands.eval``); prefer ``knnroute eval``."""
    p = argparse.ArgumentParser(prog="knnroute eval", description=__doc__.split("\n\n")[0])
    configure(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
