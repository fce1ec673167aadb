"""Files in and out for batch routing: find the inputs, read them in batches, write Arrow tables.

Formats: Parquet, CSV, JSON lines. pyarrow and pandas are imported inside the functions.
"""

from __future__ import annotations

import glob as _glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "arrow_to_numpy",
    "as_matrix",
    "columns_of",
    "iter_local",
    "read_decisions",
    "resolve_inputs",
    "to_arrow_table",
]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json",
           ".ndjson": "json"}


def resolve_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[str], str]:
    """Expand files, globs and folders into a sorted file list of one format.

    Returns ``(paths, fmt)`` with ``fmt`` in ``parquet`` / ``csv`` / ``json`` (JSON lines). Remote URIs
    (``s3://...``, ``gs://...``) are passed through (format from the extension) for Ray to read.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no input given")
    paths: list[str] = []
    for item in items:
        s = str(item)
        if "://" in s:
            paths.append(s)
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in FORMATS)
            if not found:
                raise FileNotFoundError(f"folder {s!r} holds no .parquet/.csv/.jsonl files")
            paths.extend(found)
        elif p.is_file():
            paths.append(str(p))
        else:
            found = sorted(_glob.glob(str(p)))
            found = [f for f in found if Path(f).is_file()]
            if not found:
                raise FileNotFoundError(f"no input file matches {s!r}")
            paths.extend(found)
    fmts = set()
    for f in paths:
        ext = Path(f.split("?")[0]).suffix.lower()
        if ext not in FORMATS:
            raise ValueError(f"{f!r}: unsupported input format {ext or '(no extension)'!r}; "
                             "use .parquet, .csv or .jsonl")
        fmts.add(FORMATS[ext])
    if len(fmts) != 1:
        raise ValueError(f"inputs mix formats {sorted(fmts)}: route one format per run")
    return paths, fmts.pop()


def as_matrix(col: Any, name: str) -> np.ndarray:
    """An embedding column (2-D array, object array of vectors, or JSON strings as in CSV) -> float32
    (n, d)."""
    a = np.asarray(col) if not isinstance(col, np.ndarray) else col
    if a.dtype != object and a.ndim == 2:
        return np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"column {name!r}: expected one embedding per row, got shape {a.shape}")
    rows = []
    for i, v in enumerate(a):
        if isinstance(v, (str, bytes)):
            try:
                v = json.loads(v)
            except ValueError:
                raise ValueError(f"column {name!r} row {i}: not a JSON list of numbers") from None
        if v is None:
            raise ValueError(f"column {name!r} row {i}: missing embedding")
        rows.append(np.asarray(v, dtype=np.float32))
    if not rows:
        return np.zeros((0, 0), np.float32)
    dims = {r.shape for r in rows}
    if len(dims) != 1 or rows[0].ndim != 1:
        raise ValueError(f"column {name!r}: embeddings of different shapes {sorted(map(str, dims))[:3]}")
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)


def columns_of(paths: list[str], fmt: str) -> list[str]:
    """Column names of the first input (cheap: Parquet schema, or the first rows)."""
    p = paths[0]
    if "://" in p:
        return []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    import pandas as pd

    if fmt == "csv":
        return list(pd.read_csv(p, nrows=1).columns)
    return list(pd.read_json(p, lines=True, nrows=1).columns)


def iter_local(paths: list[str], fmt: str, columns: list[str],
               batch_size: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(file index, numpy batch) over the inputs in order, ``batch_size`` rows at a time."""
    import pyarrow as pa

    for fi, p in enumerate(paths):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            batches: Iterable[Any] = pf.iter_batches(batch_size=batch_size, columns=columns)
        else:
            import pandas as pd

            df = pd.read_csv(p, usecols=columns) if fmt == "csv" else pd.read_json(p, lines=True)[columns]
            tbl = pa.Table.from_pandas(df, preserve_index=False)
            batches = tbl.to_batches(max_chunksize=batch_size)
        for rb in batches:
            yield fi, {name: arrow_to_numpy(rb.column(name)) for name in columns}


def arrow_to_numpy(col: Any) -> np.ndarray:
    import pyarrow as pa

    t = col.type
    if pa.types.is_fixed_size_list(t) and col.null_count == 0:
        return col.values.to_numpy(zero_copy_only=False).reshape(len(col), t.list_size)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and col.null_count == 0 and len(col):
        lens = np.diff(col.offsets.to_numpy())
        if (lens == lens[0]).all():
            return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), int(lens[0]))
    return col.to_numpy(zero_copy_only=False)


def to_arrow_table(out: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa

    arrays = {}
    for k, v in out.items():
        if v.dtype == object:
            arrays[k] = pa.array(list(v), from_pandas=True)
        else:
            arrays[k] = pa.array(v)
    if "fallback" in arrays and pa.types.is_null(arrays["fallback"].type):
        arrays["fallback"] = arrays["fallback"].cast(pa.string())
    return pa.table(arrays)


def read_decisions(output: str | os.PathLike) -> Any:
    """The decisions under ``output`` as one pandas DataFrame (files in name order)."""
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(Path(output).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {str(output)!r}")
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
