"""``knnroute route-batch``: route a batch of prompts or embeddings from files, write decisions to Parquet.

The rows come from ``--input`` files, or from ``--data SPEC`` (the data spec every command takes,
:mod:`knnroute.data.spec`): each dataset's prompts (or its embeddings, when every dataset of the spec
carries them, e.g. the demo) with its ``dataset`` name and ``id``, which the output keeps. Prompts are
embedded with the router file's embedder and prompt hygiene, as when serving.

In this process by default; ``--ray`` runs it on Ray Data (a local Ray, or ``--ray-address``), with
``--workers`` actors that each load the router file once. See ``docs/distributed.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from knnroute.commands._options import add_prices, add_quiet
from knnroute.data.spec import SPEC_HELP

__all__ = ["configure", "run", "write_spec_inputs"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", required=True, metavar="ROUTER_FILE", help="router file from 'knnroute fit'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="Parquet / CSV / JSONL file(s), glob(s) (quote them) or folder(s)")
    src.add_argument("--data", metavar="SPEC",
                     help=f"route the prompts of a data spec instead: {SPEC_HELP}; the output keeps the "
                     "dataset and id columns (written to a temporary Parquet folder on this machine first)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="output folder for the Parquet decisions (new)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lam", type=float, help="cost weight: score ([0, 1]) per USD (default: the file's)")
    g.add_argument("--max-cost", type=float, help="budget: mean USD per query, via the file's budget table")
    p.add_argument("--embedding-column", help="column of embeddings (default: 'embedding' if present)")
    p.add_argument("--prompt-column", help="column of prompt text (default: 'prompt' if no embeddings)")
    p.add_argument("--keep-columns", help="comma list of input columns copied to the output (default: id)")
    p.add_argument("--all-models", action="store_true",
                   help="also write score:<model> and cost:<model> columns")
    p.add_argument("--no-confidence", action="store_true",
                   help="skip the confidence columns: batch path, several times faster (no fallback policy)")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per batch (default 4096)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (needs the 'ray' extra)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--ray-address", help="Ray cluster to connect to (default: start a local one)")
    p.add_argument("--no-verify", action="store_true", help="skip the router file's payload checksum")
    add_quiet(p)
    add_prices(p, "; with --data only")


def write_spec_inputs(spec: str, folder: str | Path, prices: str | None = None) -> list[Path]:
    """Write the prompts of a data spec as Parquet files in ``folder`` (one per dataset); returns the paths.

    Columns: ``dataset``, ``id`` and ``embedding`` (float32 lists) when every dataset of the spec carries
    embeddings, else ``prompt`` (``ValueError`` when a dataset has neither). ``prices``: a price table
    file for long-format files with token counts instead of a cost column (``--prices``).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from knnroute.data.spec import resolve_spec

    datasets = resolve_spec(spec, prices=prices)
    use_embeddings = all(ds.embeddings is not None for ds in datasets)
    if not use_embeddings:
        bare = [ds.name for ds in datasets if ds.prompts is None]
        if bare:
            raise ValueError(f"--data {spec!r}: dataset(s) {bare} have no prompts or embeddings to route")
    paths = []
    for i, ds in enumerate(datasets):
        cols: dict[str, object] = {
            "dataset": pa.array([ds.name] * ds.n, pa.string()),
            "id": pa.array([str(x) for x in ds.ids], pa.string()),
        }
        if use_embeddings:
            X = np.ascontiguousarray(ds.embeddings, dtype=np.float32)
            cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
        else:
            cols["prompt"] = pa.array([str(p) for p in ds.prompts], pa.string())  # type: ignore[union-attr]
        path = Path(folder) / f"part-{i:04d}.parquet"
        pq.write_table(pa.table(cols), path)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    import tempfile

    from knnroute.production.batch import route_batch

    keep = None
    if args.keep_columns is not None:
        keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()]
    tmp = None
    try:
        inputs = args.input
        prices = getattr(args, "prices", None)
        if prices is not None and getattr(args, "data", None) is None:
            raise ValueError("--prices goes with --data (it turns token counts into costs while loading)")
        if getattr(args, "data", None) is not None:
            tmp = tempfile.TemporaryDirectory(prefix="knnroute-route-batch-")
            inputs = [str(p) for p in write_spec_inputs(args.data, tmp.name, prices=prices)]
            keep = ["dataset", "id"] if keep is None else keep
        res = route_batch(
            args.router,
            inputs,
            args.output,
            lam=args.lam,
            max_cost=args.max_cost,
            embedding_column=args.embedding_column,
            prompt_column=args.prompt_column,
            keep_columns=keep,
            use_ray=args.ray,
            workers=args.workers,
            batch_size=args.batch_size,
            confidence=not args.no_confidence,
            all_models=args.all_models,
            verify=not args.no_verify,
            progress=not args.no_progress,
            ray_address=args.ray_address,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"knnroute route-batch: error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(res.to_dict()))
    return 0
