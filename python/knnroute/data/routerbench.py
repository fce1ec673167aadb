"""RouterBench wide format: the CSV folder (shipped train/test split), single CSV files and the pickles.

See :func:`load_routerbench` for the columns, ids, splits and costs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset, concat
from knnroute.data.hygiene import decode_turns as _decode_turns
from knnroute.data.hygiene import prompt_text
from knnroute.data.splits import SHIPPED_VAL_FRACTION, carve_validation
from knnroute.data.tables import (
    PathLike,
    check_costs,
    check_models_have_outcomes,
    check_scores,
    numeric_column,
    read_pickle,
    read_table,
    require_pandas,
)

__all__ = ["is_routerbench_dir", "is_routerbench_wide", "load_routerbench"]


_RB_SUFFIX_COST = "|total_cost"
_RB_SUFFIX_RESPONSE = "|model_response"


def _routerbench_frame(df: Any, where: str) -> dict[str, Any]:
    """Validate one RouterBench wide-format table and pull out its arrays."""
    cols = [str(c) for c in df.columns]
    missing = [c for c in ("prompt", "eval_name") if c not in cols]
    if missing:
        raise ValueError(f"{where}: missing required column(s) {missing} (RouterBench wide format)")
    cost_models = [c[: -len(_RB_SUFFIX_COST)] for c in cols if c.endswith(_RB_SUFFIX_COST)]
    if not cost_models:
        raise ValueError(f"{where}: no '<model>|total_cost' columns (RouterBench wide format)")
    no_score = [m for m in cost_models if m not in cols]
    if no_score:
        raise ValueError(f"{where}: model(s) {no_score} have a '|total_cost' column but no score column")
    # models in the order of their score columns
    models = [c for c in cols if c in set(cost_models)]
    scores = np.column_stack([numeric_column(df[m], where, m) for m in models])
    costs = np.column_stack(
        [numeric_column(df[m + _RB_SUFFIX_COST], where, m + _RB_SUFFIX_COST) for m in models]
    )
    for j, m in enumerate(models):
        check_scores(scores[:, j], where, m)
        check_costs(costs[:, j], where, m + _RB_SUFFIX_COST)
    check_models_have_outcomes(scores, models, where)
    raw = df["prompt"].astype(str).tolist()
    if "sample_id" in cols:
        sid = df["sample_id"].astype(str).tolist()
    else:
        sid = [f"row{i}" for i in range(len(df))]
    rowkey = df["Unnamed: 0"].astype(str).tolist() if "Unnamed: 0" in cols else [str(x) for x in df.index]
    return {
        "models": models,
        "scores": scores,
        "costs": costs,
        "raw_prompts": raw,
        "sample_id": sid,
        "rowkey": rowkey,
        "eval_name": df["eval_name"].astype(str).tolist(),
    }


def _routerbench_task(eval_name: str) -> str:
    """Dataset name for a RouterBench ``eval_name``: MMLU subjects fold into ``mmlu``; ``-`` -> ``_``."""
    base = eval_name.split("-", 1)[0] if eval_name.startswith("mmlu") else eval_name
    return base.replace("-", "_")


def _routerbench_dataset(
    name: str, parts: Sequence[dict[str, Any]], source: str, seed: int, val_fraction: float, where: str
) -> RoutingDataset:
    models = parts[0]["models"]
    scores = np.concatenate([p["scores"] for p in parts])
    costs = np.concatenate([p["costs"] for p in parts])
    raw = [r for p in parts for r in p["raw_prompts"]]
    sid = [s for p in parts for s in p["sample_id"]]
    rowkey = [k for p in parts for k in p["rowkey"]]
    evals = [e for p in parts for e in p["eval_name"]]
    shipped = [p.get("split") for p in parts]
    n = len(raw)

    # Ids: sample_id. A sample_id that repeats with a different shipped prompt (RouterBench has ARC-C rows
    # whose question is sent once and, in another row, twice as two turns) is a different prompt: its id
    # gets '#<row key>'. The same id with the same prompt and conflicting observed outcomes is an error.
    first: dict[tuple[str, str], int] = {}
    count: dict[str, int] = {}
    for i in range(n):
        count[sid[i]] = count.get(sid[i], 0) + 1
        key = (sid[i], raw[i])
        if key in first:
            j = first[key]
            both = ~np.isnan(scores[i]) & ~np.isnan(scores[j])
            if (scores[i][both] != scores[j][both]).any():
                raise ValueError(
                    f"{where}: duplicate prompt id {sid[i]!r} (rows with key {rowkey[j]} and {rowkey[i]}) "
                    "has the same prompt but conflicting scores"
                )
        else:
            first[key] = i
    ids = [s if count[s] == 1 else f"{s}#{k}" for s, k in zip(sid, rowkey, strict=True)]
    if len(set(ids)) != n:
        raise ValueError(
            f"{where}: duplicate prompt ids that cannot be told apart (same sample_id and row key)"
        )

    split = None
    split_source = ""
    if all(s is not None for s in shipped):
        labels = np.array([lab for p in parts for lab in [p["split"]] * len(p["raw_prompts"])], dtype=object)
        split = carve_validation(labels, val_fraction, seed)
        split_source = (
            f"shipped train/test files; val = seeded {val_fraction:.3g} of shipped train (seed={seed}); "
            "shipped test untouched"
        )
    n_multi = sum(1 for r in raw if len(_decode_turns(r) or ()) > 1)
    n_dup = sum(1 for c in count.values() if c > 1)
    notes = []
    if n_dup:
        notes.append(
            f"{n_dup} sample_ids appear in 2+ rows with different shipped prompts; kept as separate rows "
            "with ids '<sample_id>#<row key>'"
        )
    return RoutingDataset(
        name=name,
        model_names=list(models),
        scores=scores,
        costs=costs,
        ids=np.asarray(ids, dtype=object),
        prompts=[prompt_text(r) for r in raw],
        prices=None,
        groups=np.asarray(evals, dtype=object),
        split=split,
        source=source,
        meta={
            "benchmark": "routerbench",
            "split_source": split_source,
            "score_mapping": "RouterBench correctness columns as shipped (0/1 here), on [0, 1]",
            "cost_model": "real: RouterBench '<model>|total_cost' (USD, prompt + response); no price table",
            "n_duplicate_sample_ids": n_dup,
            "n_multi_turn_prompts": n_multi,
            "notes": notes,
        },
    )


def load_routerbench(
    path: PathLike, *, by_task: bool = True, seed: int = 0, val_fraction: float = SHIPPED_VAL_FRACTION
) -> list[RoutingDataset]:
    """RouterBench wide format: a CSV file, a folder of CSV splits, or an official pickle.

    Columns: ``prompt`` (a string-encoded list of turns, decoded and joined by a blank line; consecutive
    duplicate turns collapsed), ``eval_name``, one score column per model (the column names are the model
    names; correctness, 0/1 in the shipped files) and ``<model>|total_cost`` (USD per query, prompt +
    response, real). ``sample_id`` becomes the prompt id when present.

    * Folder (e.g. ``routerbench-0shot-subset/``): every ``<task>_train.csv`` / ``<task>_test.csv`` pair
      becomes one dataset named ``<task>`` (``arc_challenge``, ``mbpp``, ``winograde``) with the shipped
      split: shipped test -> ``test`` untouched; shipped train -> ``train``, with a seeded
      ``val_fraction`` (default 1/8) relabelled ``val``.
    * ``.pkl`` (``routerbench_0shot.pkl`` / ``routerbench_5shot.pkl`` from Hugging Face
      ``withmartian/routerbench``, downloaded by the user; same columns): no shipped split. A pickle can
      run code: it is read only inside :func:`knnroute.data.tables.allow_pickle` (``--allow-pickle``);
      convert it once to Parquet with ``knnroute convert --allow-pickle``.
    * A single CSV: no split.

    With ``by_task=False`` everything becomes one dataset ``routerbench`` with ``groups`` = ``eval_name``.
    For pickles and single files tasks come from ``eval_name`` (``arc-challenge`` -> ``arc_challenge``;
    MMLU subjects fold into ``mmlu``). Prices: none (costs are real; RouterBench ships no price table).

    Missing outcomes stay NaN. In the shipped subset all 154 NaN score cells are in ARC-C: 14 sample_ids
    appear in two rows each, one row (the question sent twice, as two turns) scored for
    gpt-3.5-turbo-1106 only, the other scored for the other 10 models. Both rows are kept as shipped; a
    repeated sample_id gets ``#<row key>`` appended to stay unique (``meta["n_duplicate_sample_ids"]``).
    """
    require_pandas()
    p = Path(path)
    if p.is_dir():
        files = sorted(p.rglob("*.csv"))
        if not files:
            raise FileNotFoundError(f"{p}: no RouterBench CSV files inside")
        tasks: dict[str, list[dict[str, Any]]] = {}
        for f in files:
            stem = f.stem
            m = re.match(r"^(.*)_(train|test|val)$", stem)
            task, shipped = (m.group(1), m.group(2)) if m else (stem, None)
            frame = _routerbench_frame(read_table(f), str(f))
            frame["split"] = shipped
            frame["file"] = f
            tasks.setdefault(task, []).append(frame)
        models0 = next(iter(tasks.values()))[0]["models"]
        for parts in tasks.values():
            for fr in parts:
                if fr["models"] != models0:
                    raise ValueError(f"{fr['file']}: its model columns differ from the other files in {p}")
        out = []
        for task, parts in tasks.items():
            parts.sort(key=lambda fr: {"train": 0, "val": 1, "test": 2, None: 3}[fr["split"]])
            src = f"RouterBench CSV: {', '.join(fr['file'].name for fr in parts)} in {p}"
            out.append(_routerbench_dataset(task, parts, src, seed, val_fraction, str(p)))
        if not by_task:
            return [_merge(out, "routerbench", seed)]
        return out

    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.suffix.lower() in (".pkl", ".pickle"):
        df = read_pickle(p)  # refused unless the caller opted in (allow_pickle / --allow-pickle)
        if len(df) == 0:
            raise ValueError(f"{p}: file has no rows")
        kind = "RouterBench pickle"
    else:
        df = read_table(p)
        kind = "RouterBench CSV"
    frame = _routerbench_frame(df, str(p))
    frame["split"] = None
    src = f"{kind}: {p}"
    if not by_task:
        return [_routerbench_dataset("routerbench", [frame], src, seed, val_fraction, str(p))]
    task_of = [_routerbench_task(e) for e in frame["eval_name"]]
    out = []
    for task in dict.fromkeys(task_of):
        idx = [i for i, t in enumerate(task_of) if t == task]
        sub = {
            k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx])
            if k not in ("models", "split")
            else v
            for k, v in frame.items()
        }
        ds = _routerbench_dataset(task, [sub], src, seed, val_fraction, str(p))
        out.append(_drop_empty_models(ds))
    return out


def _drop_empty_models(ds: RoutingDataset) -> RoutingDataset:
    """Drop models with no outcome in this (task) dataset, noting it; a file-level check already ran."""
    keep = ~np.isnan(ds.scores).all(axis=0)
    if keep.all():
        return ds
    dropped = [m for m, k in zip(ds.model_names, keep, strict=True) if not k]
    notes = [*ds.meta.get("notes", []), f"models with no outcomes on this task dropped: {dropped}"]
    return ds.replace(
        model_names=[m for m, k in zip(ds.model_names, keep, strict=True) if k],
        scores=ds.scores[:, keep],
        costs=ds.costs[:, keep],
        prices=None if ds.prices is None else {m: v for m, v in ds.prices.items() if m not in dropped},
        meta={**ds.meta, "notes": notes},
    )


def _merge(parts: Sequence[RoutingDataset], name: str, seed: int) -> RoutingDataset:
    ds = concat(parts, name=name)
    return ds.replace(meta={**parts[0].meta, "parts": [d.name for d in parts]}, source=parts[0].source)



def is_routerbench_wide(columns: set[str]) -> bool:
    """Whether a table with these columns is RouterBench's wide format (``eval_name``, ``<m>|total_cost``)."""
    return "eval_name" in columns and any(c.endswith(_RB_SUFFIX_COST) for c in columns)


def is_routerbench_dir(p: Path) -> bool:
    """Whether folder ``p`` holds RouterBench wide-format CSV files (or the shipped subset's layout)."""
    if (p / "datasets" / "routerbench_zs").is_dir():
        return True
    for f in list(p.glob("*.csv"))[:3]:
        with open(f, encoding="utf-8", errors="replace") as fh:
            head = fh.readline()
        if _RB_SUFFIX_COST in head and "eval_name" in head:
            return True
    return False
