"""Table helpers shared by the source loaders: reading files, checking columns, prices, cost estimates.

Units everywhere: scores on [0, 1], costs in USD per query, NaN for a missing cell. Bad input raises
``ValueError`` naming the file, the row and the column (rows are "data row <i>", 1 = the first row after
the header).

Token estimate used where a source has no token counts: ``tokens ~= characters / 4`` (``CHARS_PER_TOKEN``).
``pandas`` is needed for CSV / Parquet / pickle (the ``data`` extra) and is imported lazily.

Pickles run code when they are read: :func:`read_pickle` refuses them unless the caller opted in with
:func:`allow_pickle` (the CLI's ``--allow-pickle``). Parquet and CSV are the documented formats;
``knnroute convert --allow-pickle IN.pkl OUT.parquet`` converts a trusted pickle once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHARS_PER_TOKEN",
    "SCORE_RANGE",
    "PathLike",
    "PickleRefused",
    "allow_pickle",
    "check_costs",
    "check_models_have_outcomes",
    "check_scores",
    "estimate_cost",
    "find_dir",
    "numeric_column",
    "parse_prices",
    "read_jsonl",
    "read_pickle",
    "read_price_table",
    "read_table",
    "require_pandas",
    "row_label",
    "table_columns",
]

CHARS_PER_TOKEN = 4.0
SCORE_RANGE = (0.0, 1.0)

PathLike = str | os.PathLike

_PICKLE_OK: ContextVar[bool] = ContextVar("knnroute_allow_pickle", default=False)


class PickleRefused(ValueError):
    """A pickle was given without the explicit opt-in (:func:`allow_pickle`, ``--allow-pickle``)."""


@contextlib.contextmanager
def allow_pickle(on: bool = True) -> Iterator[None]:
    """Within this block, :func:`read_pickle` may unpickle files (which runs any code they carry)."""
    token = _PICKLE_OK.set(bool(on))
    try:
        yield
    finally:
        _PICKLE_OK.reset(token)


def read_pickle(path: Path) -> Any:
    """A pickled DataFrame, only inside :func:`allow_pickle`; otherwise :class:`PickleRefused` is raised
    before a byte of the file is read (unpickling runs code: only open files you trust)."""
    if not _PICKLE_OK.get():
        raise PickleRefused(
            f"{path}: refusing to unpickle (a pickle can run code); convert it once with "
            f"'knnroute convert --allow-pickle {path} OUT.parquet', or pass --allow-pickle if you trust it"
        )
    pd = require_pandas()
    df = pd.read_pickle(path)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{path}: expected a pickled pandas DataFrame, got {type(df).__name__}")
    return df


def require_pandas() -> Any:
    """The pandas module, or ImportError naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading CSV/Parquet/pickle needs pandas: pip install '.[data]' in the knnroute checkout"
        ) from e
    return pd


def row_label(i: int) -> str:
    """How errors name a 0-based data row (1 = the first row after the header)."""
    return f"data row {i + 1}"


def read_table(path: Path) -> Any:
    """A CSV / Parquet / JSONL file as a DataFrame; an empty file raises ValueError naming it."""
    pd = require_pandas()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.DataFrame(_jsonl_records(path))
        else:
            df = pd.read_csv(path)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: file is empty") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} of a line cannot be decoded); "
                         "save the file as UTF-8") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: not a valid CSV file: {str(e).strip()[:300]}") from None
    if len(df) == 0:
        raise ValueError(f"{path}: file has a header but no data rows")
    if suffix not in (".parquet", ".pq", ".jsonl", ".ndjson") and len(df.columns) == 1:
        header = str(df.columns[0])
        for sep, name in ((";", "semicolon"), ("\t", "tab")):
            if sep in header:
                raise ValueError(
                    f"{path}: read as one column {header[:80]!r}: the file looks {name}-separated; CSV files "
                    "must be comma-separated (re-export it with ',' as the delimiter)"
                )
    return df


def numeric_column(values: Any, path: Path | str, column: str, booleans: bool = True) -> np.ndarray:
    """A column as float64; NaN for blanks; ValueError naming the first non-numeric cell.

    ``booleans``: ``True``/``False`` (booleans or those words) read as 1/0, as the loaders of sources that
    document that mapping need (RouteLLM's correctness columns); with ``booleans=False`` (the long format's
    scores) the first boolean cell is an error instead of a silent 1/0.
    """
    pd = require_pandas()
    s = pd.Series(values).reset_index(drop=True)
    if not booleans:
        is_bool = s.map(lambda v: isinstance(v, (bool, np.bool_)) or (
            isinstance(v, str) and v.strip().lower() in ("true", "false")))
        if is_bool.any():
            i = int(np.flatnonzero(is_bool.to_numpy())[0])
            v = s.iloc[i]
            shown = repr(v) if isinstance(v, str) else str(bool(v))
            raise ValueError(
                f"{path}: {row_label(i)}, column {column!r}: {shown} is a boolean, not a score; write "
                "scores as numbers on [0, 1] (for right/wrong: 1 and 0)"
            )
    if s.dtype == bool:
        return s.to_numpy(dtype=np.float64)
    if s.dtype == object or str(s.dtype) in ("str", "string"):
        s = s.map(
            lambda v: (
                {"True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}.get(v, v) if isinstance(v, str) else v
            )
        )
        s = s.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v)
    out = pd.to_numeric(s, errors="coerce")
    blank = s.isna() | s.map(lambda v: isinstance(v, str) and not v.strip())
    bad = out.isna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: {row_label(i)}, column {column!r}: {s.iloc[i]!r} is not a number")
    return out.to_numpy(dtype=np.float64)


def check_scores(x: np.ndarray, path: Path | str, column: str, lo: float = 0.0, hi: float = 1.0) -> None:
    """ValueError naming the first score outside [lo, hi] or infinite (NaN = missing is fine)."""
    bad = ~np.isnan(x) & ((x < lo) | (x > hi))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        finite = x[np.isfinite(x)]
        hint = ""
        if (lo, hi) == SCORE_RANGE and finite.size and finite.min() >= 0 and finite.max() <= 100:
            hint = f" (the column's values lie in [0, 100], max {finite.max():g}: looks like 0-100: divide by 100)"
        raise ValueError(
            f"{path}: {row_label(i)}, column {column!r}: score {x[i]:g} is outside the documented range "
            f"[{lo:g}, {hi:g}]{hint}"
        )
    if np.isinf(x).any():
        i = int(np.flatnonzero(np.isinf(x))[0])
        raise ValueError(f"{path}: {row_label(i)}, column {column!r}: score is infinite")


def check_costs(x: np.ndarray, path: Path | str, column: str) -> None:
    """ValueError naming the first negative or infinite cost (NaN = missing is fine)."""
    bad = ~np.isnan(x) & ((x < 0) | np.isinf(x))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: {row_label(i)}, column {column!r}: cost {x[i]:g} is negative or infinite "
            "(USD per query >= 0)"
        )


def check_models_have_outcomes(scores: np.ndarray, models: Sequence[str], where: str) -> None:
    """ValueError naming the models whose every score is missing."""
    empty = np.isnan(scores).all(axis=0)
    if empty.any():
        names = [models[int(j)] for j in np.flatnonzero(empty)]
        raise ValueError(f"{where}: model(s) {names} have no outcomes (every score is missing)")


def estimate_cost(
    input_chars: Any, output_tokens: Any, price: tuple[float, float], chars_per_token: float = CHARS_PER_TOKEN
) -> np.ndarray:
    """USD per query from prompt length and output tokens: ``(chars/4 * in + out * out_price) / 1e6``."""
    tin = np.asarray(input_chars, dtype=np.float64) / chars_per_token
    return (tin * price[0] + np.asarray(output_tokens, dtype=np.float64) * price[1]) / 1e6


def find_dir(root: Path, rel: str) -> Path:
    """``root/rel`` if it exists, else ``root`` if it already is that folder (user passed the inner path)."""
    cand = root / rel
    if cand.is_dir():
        return cand
    if root.is_dir() and root.as_posix().rstrip("/").endswith(rel.rstrip("/")):
        return root
    raise FileNotFoundError(f"{root}: expected a folder {rel}/ inside it")


#: the longest line a JSON-lines file may have (a longer one is refused before it is read into memory)
MAX_LINE_BYTES = 64 << 20


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) of a JSON-lines file, each line at most :data:`MAX_LINE_BYTES`."""
    with open(path, "rb") as fh:
        for i in itertools.count(1):
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"{path}: line {i} is longer than {MAX_LINE_BYTES} bytes")
            yield i, line


def _parse_line(path: Path, i: int, line: bytes) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {i}: not valid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: line {i}: not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"{path}: line {i}: JSON nested too deeply") from None


def _jsonl_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines table; a malformed line is an error naming the file and the line."""
    out = []
    for i, line in _jsonl_lines(path):
        if not line.strip():
            continue
        rec = _parse_line(path, i, line)
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {i}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSON-lines file and the number of malformed lines skipped."""
    out: list[dict[str, Any]] = []
    bad = 0
    for i, line in _jsonl_lines(path):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
        except RecursionError:
            raise ValueError(f"{path}: line {i}: JSON nested too deeply") from None
    return out, bad


def read_price_table(path: PathLike) -> dict[str, tuple[float, float]]:
    """A price table (USD per 1M input/output tokens) from JSON or CSV.

    Accepted: RouterArena's ``cost.json`` (``{model: {input_token_price_per_million, ...}}``), LLMRouter's
    ``{model: {input_price, output_price}}``, ``{model: [in, out]}``, or a CSV with columns ``model``,
    ``input_price``, ``output_price``.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv":
        df = read_table(p)
        miss = [c for c in ("model", "input_price", "output_price") if c not in df.columns]
        if miss:
            raise ValueError(f"{p}: missing required column(s) {miss}")
        pin = numeric_column(df["input_price"], p, "input_price")
        pout = numeric_column(df["output_price"], p, "output_price")
        check_costs(pin, p, "input_price")
        check_costs(pout, p, "output_price")
        return {str(m): (float(a), float(b)) for m, a, b in zip(df["model"], pin, pout, strict=True)}
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: file is empty")
    with open(p, encoding="utf-8") as fh:
        raw = json.load(fh)
    return parse_prices(raw, str(p))


def parse_prices(raw: Mapping[str, Any], where: str = "prices") -> dict[str, tuple[float, float]]:
    """Normalise a price mapping (see :func:`read_price_table`) to ``{model: (in, out)}``."""
    out: dict[str, tuple[float, float]] = {}
    for m, v in raw.items():
        if isinstance(v, Mapping):
            for ki, ko in (
                ("input_token_price_per_million", "output_token_price_per_million"),
                ("input_price", "output_price"),
            ):
                if ki in v and ko in v:
                    pair = (v[ki], v[ko])
                    break
            else:
                raise ValueError(f"{where}: model {m!r}: no input/output price fields in {sorted(v)}")
        elif isinstance(v, (list, tuple)) and len(v) == 2:
            pair = (v[0], v[1])
        else:
            raise ValueError(f"{where}: model {m!r}: price must be (input, output), got {v!r}")
        try:
            a, b = float(pair[0]), float(pair[1])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: model {m!r}: price {pair!r} is not numeric") from None
        if not (a >= 0 and b >= 0 and math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"{where}: model {m!r}: price {pair!r} must be finite and >= 0")
        out[str(m)] = (a, b)
    return out



def table_columns(p: Path) -> set[str]:
    """The column names of a CSV / Parquet / JSONL file (its header or first record), not the rows."""
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: file is empty")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return set(pq.read_schema(p).names)
    if suffix in (".jsonl", ".ndjson"):
        with open(p, encoding="utf-8") as fh:
            first = fh.readline()
        try:
            return set(json.loads(first))
        except json.JSONDecodeError:
            raise ValueError(f"{p}: first line is not a JSON object") from None
    pd = require_pandas()
    try:
        return set(map(str, pd.read_csv(p, nrows=0).columns))
    except pd.errors.EmptyDataError:
        raise ValueError(f"{p}: file is empty") from None

