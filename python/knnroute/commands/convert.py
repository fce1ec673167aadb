"""``knnroute convert``: a trusted RouterBench pickle -> Parquet, once (then use the Parquet file).

Unpickling runs any code the file carries, so it needs ``--allow-pickle``; the Parquet file it writes is
plain data that ``knnroute eval --data`` / ``fit --data`` read without the flag (same columns). Example::

    knnroute convert --allow-pickle routerbench_0shot.pkl routerbench_0shot.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.pkl", help="a pickled pandas DataFrame (e.g. RouterBench's official pickle)")
    p.add_argument("output", metavar="OUT.parquet", help="the Parquet file to write")
    p.add_argument("--allow-pickle", action="store_true", required=True,
                   help="required: confirms you trust IN.pkl (unpickling runs any code the file carries)")


def run(args: argparse.Namespace) -> int:
    from knnroute.data.tables import read_pickle

    src, dst = Path(args.input), Path(args.output)
    if dst.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"{dst}: the output must be a .parquet file")
    df = read_pickle(src)  # allowed: main() runs this command inside allow_pickle(--allow-pickle)
    for col in df.columns:  # Parquet needs one type per column: lists/dicts of model outputs become JSON
        if df[col].dtype == object and not df[col].map(lambda v: v is None or isinstance(v, str)).all():
            df[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))
    df.columns = [str(c) for c in df.columns]
    df.to_parquet(dst, index=False)
    print(f"knnroute convert: wrote {len(df)} rows x {len(df.columns)} columns to {dst}", file=sys.stderr)
    return 0
