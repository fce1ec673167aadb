"""``knnroute route-batch``: route a batch of prompts or embeddings from files, write decisions to Parquet.

In this process by default; ``--ray`` runs it on Ray Data (a local Ray, or ``--ray-address``), with
``--workers`` actors that each load the router file once. See ``docs/distributed.md``.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", required=True, metavar="ROUTER_FILE", help="router file from 'knnroute fit'")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="Parquet / CSV / JSONL file(s), glob(s) (quote them) or folder(s)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder for the Parquet decisions (new)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lam", type=float, help="cost weight: score ([0, 1]) per USD (default: the file's)")
    g.add_argument("--max-cost", type=float, help="budget: mean USD per query, via the file's budget table")
    p.add_argument("--embedding-column", help="column of embeddings (default: 'embedding' if present)")
    p.add_argument("--prompt-column", help="column of prompt text (default: 'prompt' if no embeddings)")
    p.add_argument("--keep-columns", help="comma list of input columns copied to the output (default: id)")
    p.add_argument("--all-models", action="store_true", help="also write score:<model> and cost:<model> columns")
    p.add_argument("--no-confidence", action="store_true",
                   help="skip the confidence columns: batch path, several times faster (no fallback policy)")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per batch (default 4096)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (needs the 'ray' extra)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--ray-address", help="Ray cluster to connect to (default: start a local one)")
    p.add_argument("--no-verify", action="store_true", help="skip the router file's payload checksum")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from knnroute.production.batch import route_batch

    keep = None if args.keep_columns is None else [c.strip() for c in args.keep_columns.split(",") if c.strip()]
    try:
        res = route_batch(
            args.router,
            args.input,
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
    print(json.dumps(res.to_dict()))
    return 0
