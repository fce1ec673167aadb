"""The generic long format: one row per (prompt, model) outcome, in CSV, Parquet or JSONL.

:func:`load_long` reads it into a :class:`RoutingDataset`; :func:`to_long` / :func:`save_long` write one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.hygiene import prompt_text
from knnroute.data.tables import (
    PathLike,
    check_costs,
    check_models_have_outcomes,
    check_scores,
    numeric_column,
    parse_prices,
    read_price_table,
    read_table,
    require_pandas,
    row_label,
)

__all__ = ["LONG_FORMS", "LONG_GROUP_COLUMNS", "LONG_REQUIRED", "PRICE_FORMS", "load_long", "save_long", "to_long"]


LONG_REQUIRED = ("prompt_id", "model", "score")
LONG_GROUP_COLUMNS = ("task", "group")
#: The accepted columns, as every error about them shows them.
LONG_FORMS = (
    "long format: prompt_id, model, score (required); cost, or input_tokens + output_tokens with a price "
    "table (--prices FILE on the command line, load_long(path, prices=...) in Python); optional: prompt, "
    "task or group, split"
)
PRICE_FORMS = (
    "a price table is JSON {model: [USD per 1M input tokens, USD per 1M output tokens]} (or {model: "
    "{input_price, output_price}}) or CSV with columns model, input_price, output_price"
)


def load_long(
    path: PathLike,
    *,
    prices: Mapping[str, Any] | PathLike | None = None,
    name: str | None = None,
    decode_turns: bool = True,
    seed: int = 0,
) -> RoutingDataset:
    """The generic long format: one row per (prompt, model) outcome, in CSV, Parquet or JSONL.

    Columns
    -------
    ``prompt_id`` (required), ``model`` (required), ``score`` (required, on [0, 1]; blank = missing),
    and either ``cost`` (USD per query, >= 0) or ``input_tokens`` + ``output_tokens`` with a price table
    (``prices``: ``{model: (in, out)}`` USD per 1M tokens, or a JSON/CSV file, see
    :func:`read_price_table`). Optional: ``prompt`` (text; a string-encoded turn list is decoded when
    ``decode_turns``), ``task`` or ``group`` (label), ``split`` (``train``/``val``/``test``).

    Pivoted to the wide arrays: prompts in order of first appearance, models likewise; a (prompt, model)
    pair with no row, or a blank score/cost, is NaN. A repeated (prompt_id, model) row is allowed only if
    it repeats the same outcome. Errors name the file, the data row (1 = first row after the header) and
    the column.
    """
    pd = require_pandas()
    p = Path(path)
    df = read_table(p)
    cols = set(map(str, df.columns))
    missing = [c for c in LONG_REQUIRED if c not in cols]
    has_tokens = {"input_tokens", "output_tokens"} <= cols
    if "cost" not in cols and not has_tokens:
        absent = [c for c in ("input_tokens", "output_tokens") if c not in cols]
        # with one token column present, name the other one: that is the likelier omission
        missing.append("cost" if len(absent) == 2 else f"cost (or {absent[0]}, to go with the token column)")
    if missing:
        raise ValueError(
            f"{p}: missing required column(s) {missing}; found {sorted(cols)}. Accepted: {LONG_FORMS}"
        )
    if df["prompt_id"].isna().any():
        i = int(np.flatnonzero(df["prompt_id"].isna().to_numpy())[0])
        raise ValueError(f"{p}: {row_label(i)}, column 'prompt_id' is empty")
    if df["model"].isna().any():
        i = int(np.flatnonzero(df["model"].isna().to_numpy())[0])
        raise ValueError(f"{p}: {row_label(i)}, column 'model' is empty")
    pid = df["prompt_id"].astype(str).to_numpy()
    model = df["model"].astype(str).to_numpy()
    score = numeric_column(df["score"], p, "score", booleans=False)
    check_scores(score, p, "score")

    price_table: dict[str, tuple[float, float]] | None = None
    if prices is not None:
        price_table = (
            parse_prices(prices, "prices") if isinstance(prices, Mapping) else read_price_table(prices)
        )
    cost_from = "cost column (USD per query)"
    if "cost" in cols:
        cost = numeric_column(df["cost"], p, "cost")
        check_costs(cost, p, "cost")
    else:
        if price_table is None:
            raise ValueError(
                f"{p}: no 'cost' column, so a price table is needed for input_tokens/output_tokens: "
                f"--prices FILE on the command line (load_long(path, prices=...) in Python); {PRICE_FORMS}"
            )
        tin = numeric_column(df["input_tokens"], p, "input_tokens")
        tout = numeric_column(df["output_tokens"], p, "output_tokens")
        check_costs(tin, p, "input_tokens")
        check_costs(tout, p, "output_tokens")
        nopr = sorted(set(model) - set(price_table))
        if nopr:
            spare = sorted(set(price_table) - set(model))  # priced but not in the data: likely misspellings
            close = [(m, difflib.get_close_matches(m, spare, n=1, cutoff=0.6)) for m in nopr]
            hints = [f"{c[0]!r} for {m!r}" for m, c in close if c]
            hint = f"; did you mean {', '.join(hints)} (as spelled in the price table)" if hints else ""
            raise ValueError(
                f"{p}: no price for model(s) {nopr} in the price table (it has {sorted(price_table)}){hint}"
            )
        pin = np.array([price_table[m][0] for m in model])
        pout = np.array([price_table[m][1] for m in model])
        cost = (tin * pin + tout * pout) / 1e6
        cost_from = "input_tokens x input price + output_tokens x output price (price table)"

    ids = list(dict.fromkeys(pid.tolist()))
    models = list(dict.fromkeys(model.tolist()))
    ri = {k: i for i, k in enumerate(ids)}
    mj = {k: j for j, k in enumerate(models)}
    rows = np.fromiter((ri[x] for x in pid), dtype=np.int64, count=len(pid))
    colsj = np.fromiter((mj[x] for x in model), dtype=np.int64, count=len(model))
    S = np.full((len(ids), len(models)), np.nan)
    C = np.full_like(S, np.nan)
    first_row = np.full(S.shape, -1, dtype=np.int64)
    for k in range(len(pid)):
        i, j = rows[k], colsj[k]
        if first_row[i, j] >= 0:
            f = first_row[i, j]
            same = (_same(S[i, j], score[k])) and (_same(C[i, j], cost[k]))
            if not same:
                raise ValueError(
                    f"{p}: duplicate prompt_id {ids[i]!r} for model {models[j]!r} with conflicting outcomes "
                    f"({row_label(int(f))}: score {S[i, j]:g} cost {C[i, j]:g}; "
                    f"{row_label(k)}: score {score[k]:g} cost {cost[k]:g})"
                )
            continue
        first_row[i, j] = k
        S[i, j] = score[k]
        C[i, j] = cost[k]
    check_models_have_outcomes(S, models, str(p))

    def per_prompt(col: str, conv: Callable[[Any], Any]) -> list[Any]:
        vals: list[Any] = [None] * len(ids)
        series = df[col]
        for k, v in enumerate(series):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                continue
            i = rows[k]
            v = conv(v)
            if vals[i] is None:
                vals[i] = v
            elif vals[i] != v:
                raise ValueError(
                    f"{p}: {row_label(k)}, column {col!r}: prompt_id {ids[i]!r} has two different values"
                )
        return vals

    prompts = None
    if "prompt" in cols:
        pv = per_prompt("prompt", lambda v: prompt_text(v) if decode_turns else str(v))
        prompts = [v if v is not None else "" for v in pv]
    gcol = next((c for c in LONG_GROUP_COLUMNS if c in cols), None)
    groups = None
    if gcol:
        gv = per_prompt(gcol, str)
        groups = [v if v is not None else "unknown" for v in gv]
    split = None
    if "split" in cols:
        sv = per_prompt("split", lambda v: str(v).strip().lower())
        if any(v is None for v in sv):
            i = sv.index(None)
            raise ValueError(f"{p}: prompt_id {ids[i]!r} has no 'split' value (the column is partly empty)")
        alias = {"validation": "val", "valid": "val", "dev": "val"}
        split = [alias.get(v, v) for v in sv]
        bad = sorted(set(split) - {"train", "val", "test"})
        if bad:
            raise ValueError(f"{p}: column 'split' has unknown label(s) {bad}; use train/val/test")
    ds_prices = None
    if price_table is not None:
        ds_prices = {m: price_table[m] for m in models if m in price_table}
    return RoutingDataset(
        name=name or p.stem,
        model_names=models,
        scores=S,
        costs=C,
        ids=np.asarray(ids, dtype=object),
        prompts=prompts,
        prices=ds_prices,
        groups=None if groups is None else np.asarray(groups, dtype=object),
        split=None if split is None else np.asarray(split, dtype=object),
        source=f"long format: {p}",
        meta={
            "split_source": "shipped 'split' column" if split is not None else "",
            "score_mapping": "score column as given, on [0, 1]",
            "cost_model": cost_from,
        },
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def to_long(ds: RoutingDataset) -> Any:
    """The dataset as a long-format ``pandas.DataFrame`` (every cell, NaN kept); inverse of load_long."""
    pd = require_pandas()
    n, m = ds.n, ds.n_models
    data: dict[str, Any] = {
        "prompt_id": np.repeat(ds.ids, m),
        "model": np.tile(np.array(ds.model_names, dtype=object), n),
        "score": ds.scores.reshape(-1),
        "cost": ds.costs.reshape(-1),
    }
    if ds.prompts is not None:
        data["prompt"] = np.repeat(np.array(ds.prompts, dtype=object), m)
    if ds.groups is not None:
        data["task"] = np.repeat(ds.groups, m)
    if ds.split is not None:
        data["split"] = np.repeat(ds.split, m)
    cols = ["prompt_id", "prompt", "model", "score", "cost", "task", "split"]
    return pd.DataFrame({c: data[c] for c in cols if c in data})


def save_long(ds: RoutingDataset, path: PathLike) -> Path:
    """Write :func:`to_long` to CSV (``.csv``) or Parquet (``.parquet``/``.pq``)."""
    p = Path(path)
    df = to_long(ds)
    if p.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(p, index=False)
    elif p.suffix.lower() == ".csv":
        df.to_csv(p, index=False)
    else:
        raise ValueError(f"{p}: use a .csv or .parquet file name")
    return p

