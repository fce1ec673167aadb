"""Loaders: real routing benchmarks and a generic long format, all to :class:`RoutingDataset`.

Entry point: :func:`load_dataset` takes a file, a folder or a registered name and returns a list of
datasets. Names resolve under :func:`data_dir` (``$KNNROUTE_DATA`` or ``../shared/data``).

Units everywhere: scores on [0, 1], costs in USD per query, NaN for a missing cell (kept, counted in
``summary()``). Each loader's docstring says how it maps the source's scores and where its costs and
prices come from. Bad input raises ``ValueError`` naming the file, the row and the column.

Token estimate used where a source has no token counts: ``tokens ~= characters / 4`` (``CHARS_PER_TOKEN``).
``pandas`` is needed for CSV / Parquet / pickle (the ``data`` extra) and is imported lazily.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.hygiene import decode_turns as _decode_turns
from knnroute.data.hygiene import prompt_text
from knnroute.data.splits import SHIPPED_VAL_FRACTION, carve_validation

CHARS_PER_TOKEN = 4.0
SCORE_RANGE = (0.0, 1.0)

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------- locations
def data_dir(required: bool = True) -> Path | None:
    """The folder holding the real data (``routerbench-0shot-subset/``, ``llmrouter-dcrouter/``...).

    ``$KNNROUTE_DATA`` if set; otherwise the first existing ``<dir>/../shared/data`` or
    ``<dir>/shared/data`` for ``<dir>`` = the current directory and each of its parents.

    Parameters
    ----------
    required : bool
        If True, raise ``FileNotFoundError`` (telling the user to set ``KNNROUTE_DATA``) when no folder is
        found; if False, return ``None`` instead.
    """
    env = os.environ.get("KNNROUTE_DATA")
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p.resolve()
        if required:
            raise FileNotFoundError(
                f"KNNROUTE_DATA={env!r} is not a folder: point it at the real-data folder"
            )
        return None
    cwd = Path.cwd()
    for d in (cwd, *cwd.parents):
        for cand in (d / ".." / "shared" / "data", d / "shared" / "data"):
            if cand.is_dir():
                return cand.resolve()
    if required:
        raise FileNotFoundError(
            "real routing data not found: set KNNROUTE_DATA to the folder that holds "
            "routerbench-0shot-subset/, llmrouter-dcrouter/, ... (default: ../shared/data)"
        )
    return None


# ------------------------------------------------------------------------------------------- helpers
def _pd() -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading CSV/Parquet/pickle needs pandas: pip install 'knnroute[data]'") from e
    return pd


def _row(i: int) -> str:
    return f"data row {i + 1}"


def _read_table(path: Path) -> Any:
    """A CSV / Parquet / JSONL file as a DataFrame; an empty file raises ValueError naming it."""
    pd = _pd()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(path, lines=True)
        else:
            df = pd.read_csv(path)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: file is empty") from e
    if len(df) == 0:
        raise ValueError(f"{path}: file has a header but no data rows")
    return df


def _numeric(values: Any, path: Path | str, column: str) -> np.ndarray:
    """A column as float64; NaN for blanks; ValueError naming the first non-numeric cell."""
    pd = _pd()
    s = pd.Series(values).reset_index(drop=True)
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
        raise ValueError(f"{path}: {_row(i)}, column {column!r}: {s.iloc[i]!r} is not a number")
    return out.to_numpy(dtype=np.float64)


def _check_scores(x: np.ndarray, path: Path | str, column: str, lo: float = 0.0, hi: float = 1.0) -> None:
    bad = ~np.isnan(x) & ((x < lo) | (x > hi))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: {_row(i)}, column {column!r}: score {x[i]:g} is outside the documented range [{lo:g}, {hi:g}]"
        )
    if np.isinf(x).any():
        i = int(np.flatnonzero(np.isinf(x))[0])
        raise ValueError(f"{path}: {_row(i)}, column {column!r}: score is infinite")


def _check_costs(x: np.ndarray, path: Path | str, column: str) -> None:
    bad = ~np.isnan(x) & ((x < 0) | np.isinf(x))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: {_row(i)}, column {column!r}: cost {x[i]:g} is negative or infinite (USD per query >= 0)"
        )


def _check_models_have_outcomes(scores: np.ndarray, models: Sequence[str], where: str) -> None:
    empty = np.isnan(scores).all(axis=0)
    if empty.any():
        names = [models[j] for j in np.flatnonzero(empty)]
        raise ValueError(f"{where}: model(s) {names} have no outcomes (every score is missing)")


def estimate_cost(
    input_chars: Any, output_tokens: Any, price: tuple[float, float], chars_per_token: float = CHARS_PER_TOKEN
) -> np.ndarray:
    """USD per query from prompt length and output tokens: ``(chars/4 * in + out * out_price) / 1e6``."""
    tin = np.asarray(input_chars, dtype=np.float64) / chars_per_token
    return (tin * price[0] + np.asarray(output_tokens, dtype=np.float64) * price[1]) / 1e6


def _find_dir(root: Path, rel: str) -> Path:
    """``root/rel`` if it exists, else ``root`` if it already is that folder (user passed the inner path)."""
    cand = root / rel
    if cand.is_dir():
        return cand
    if root.is_dir() and root.as_posix().rstrip("/").endswith(rel.rstrip("/")):
        return root
    raise FileNotFoundError(f"{root}: expected a folder {rel}/ inside it")


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSON-lines file and the number of malformed lines skipped."""
    out: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return out, bad


# ----------------------------------------------------------------------------------- RouterBench wide
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
    scores = np.column_stack([_numeric(df[m], where, m) for m in models])
    costs = np.column_stack([_numeric(df[m + _RB_SUFFIX_COST], where, m + _RB_SUFFIX_COST) for m in models])
    for j, m in enumerate(models):
        _check_scores(scores[:, j], where, m)
        _check_costs(costs[:, j], where, m + _RB_SUFFIX_COST)
    _check_models_have_outcomes(scores, models, where)
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
    ids = [s if count[s] == 1 else f"{s}#{k}" for s, k in zip(sid, rowkey)]
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
        ids=ids,
        prompts=[prompt_text(r) for r in raw],
        prices=None,
        groups=evals,
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
      ``withmartian/routerbench``, downloaded by the user; same columns): no shipped split. Only unpickle
      files you trust: a pickle can run code.
    * A single CSV: no split.

    With ``by_task=False`` everything becomes one dataset ``routerbench`` with ``groups`` = ``eval_name``.
    For pickles and single files tasks come from ``eval_name`` (``arc-challenge`` -> ``arc_challenge``;
    MMLU subjects fold into ``mmlu``). Prices: none (costs are real; RouterBench ships no price table).

    Missing outcomes stay NaN. In the shipped subset all 154 NaN score cells are in ARC-C: 14 sample_ids
    appear in two rows each, one row (the question sent twice, as two turns) scored for
    gpt-3.5-turbo-1106 only, the other scored for the other 10 models. Both rows are kept as shipped; a
    repeated sample_id gets ``#<row key>`` appended to stay unique (``meta["n_duplicate_sample_ids"]``).
    """
    pd = _pd()
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
            frame = _routerbench_frame(_read_table(f), str(f))
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
        df = pd.read_pickle(p)
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{p}: expected a pickled pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError(f"{p}: file has no rows")
        kind = "RouterBench pickle"
    else:
        df = _read_table(p)
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
    dropped = [m for m, k in zip(ds.model_names, keep) if not k]
    notes = [*ds.meta.get("notes", []), f"models with no outcomes on this task dropped: {dropped}"]
    return ds.replace(
        model_names=[m for m, k in zip(ds.model_names, keep) if k],
        scores=ds.scores[:, keep],
        costs=ds.costs[:, keep],
        prices=None if ds.prices is None else {m: v for m, v in ds.prices.items() if m not in dropped},
        meta={**ds.meta, "notes": notes},
    )


def _merge(parts: Sequence[RoutingDataset], name: str, seed: int) -> RoutingDataset:
    from knnroute.data.dataset import concat

    ds = concat(parts, name=name)
    return ds.replace(meta={**parts[0].meta, "parts": [d.name for d in parts]}, source=parts[0].source)


# ----------------------------------------------------------------------------------------- LLMRouter
def load_llmrouter(
    path: PathLike,
    *,
    seed: int = 0,
    val_fraction: float = SHIPPED_VAL_FRACTION,
    output_tokens: Mapping[str, float] | float | None = None,
) -> list[RoutingDataset]:
    """LLMRouter (ulab-uiuc) RouterDC-format data: ``llmrouter-dcrouter/``.

    * Prompts: ``data/dcrouter_preprocessed/{train,test}.json`` (``question``, ``scores`` per model);
      5,608 train + 500 test, 9 models. Ids ``train/<i>``, ``test/<i>``.
    * Scores: LLMRouter's task metrics, already on [0, 1] (exact match / F1-like; some fractional).
    * Split: shipped; shipped test -> ``test``; shipped train -> ``train`` with a seeded ``val_fraction``
      relabelled ``val``. The shipped test repeats 119 train questions (GPQA, HumanEval, some MBPP);
      ``meta["n_test_questions_in_train"]`` counts them and the summary notes it.
    * Groups: the task, joined on the question text from ``default_query_{train,test}.jsonl`` (first
      match in file order when a question appears under two tasks; ``"unknown"`` when none).
    * Prices: LLMRouter's own ``default_llm.json`` (``input_price`` / ``output_price``, USD per 1M
      tokens; 0.1-0.9 for these 9 models).
    * Costs (estimated; no token counts ship): input tokens = question characters / 4; output tokens = a
      per-model constant, default :data:`LLMROUTER_OUTPUT_TOKENS` for every model (override with
      ``output_tokens`` = a number or ``{model: tokens}``).
    """
    root = Path(path)
    d = root / "data" if (root / "data").is_dir() else root
    pre = d / "dcrouter_preprocessed"
    if not pre.is_dir():
        raise FileNotFoundError(f"{root}: no dcrouter_preprocessed/ folder (LLMRouter data)")
    recs: dict[str, list[dict[str, Any]]] = {}
    for part in ("train", "test"):
        f = pre / f"{part}.json"
        if f.stat().st_size == 0:
            raise ValueError(f"{f}: file is empty")
        with open(f, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, list) or not data:
            raise ValueError(f"{f}: expected a non-empty JSON list of {{question, scores}} records")
        recs[part] = data
    models = list(recs["train"][0]["scores"])
    questions: list[str] = []
    ids: list[str] = []
    split: list[str] = []
    rows: list[list[float]] = []
    for part, data in recs.items():
        for i, r in enumerate(data):
            where = f"{pre / (part + '.json')}: record {i}"
            if "question" not in r or "scores" not in r:
                raise ValueError(f"{where}: missing 'question' or 'scores'")
            sc = r["scores"]
            if set(sc) != set(models):
                raise ValueError(f"{where}: models {sorted(sc)} differ from {sorted(models)}")
            row = []
            for m in models:
                v = sc[m]
                if v is None:
                    row.append(math.nan)
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{where}: score for {m!r} is not a number: {v!r}")  # noqa: TRY004 (bad data -> ValueError)
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"{where}: score {v!r} for {m!r} is outside the documented range [0, 1]")
                row.append(float(v))
            rows.append(row)
            questions.append(str(r["question"]))
            ids.append(f"{part}/{i}")
            split.append(part)
    scores = np.array(rows, dtype=np.float64)
    _check_models_have_outcomes(scores, models, str(pre))

    # task labels
    q2task: dict[str, str] = {}
    qd = d / "example_data" / "query_data"
    n_bad_lines = 0
    for part in ("train", "test"):
        f = qd / f"default_query_{part}.jsonl"
        if f.is_file():
            qrecs, bad = _read_jsonl(f)
            n_bad_lines += bad
            for q in qrecs:
                if isinstance(q.get("query"), str):
                    q2task.setdefault(q["query"], str(q.get("task_name", "unknown")))
    groups = [q2task.get(q, "unknown") for q in questions]

    # prices
    llm_file = d / "example_data" / "llm_candidates" / "default_llm.json"
    with open(llm_file, encoding="utf-8") as fh:
        cand = json.load(fh)
    missing = [m for m in models if m not in cand]
    if missing:
        raise ValueError(f"{llm_file}: no price for model(s) {missing}")
    prices = {m: (float(cand[m]["input_price"]), float(cand[m]["output_price"])) for m in models}
    if output_tokens is None:
        out_tok = {m: float(LLMROUTER_OUTPUT_TOKENS) for m in models}
    elif isinstance(output_tokens, Mapping):
        out_tok = {m: float(output_tokens[m]) for m in models}
    else:
        out_tok = {m: float(output_tokens) for m in models}
    chars = np.array([len(q) for q in questions], dtype=np.float64)
    costs = np.column_stack([estimate_cost(chars, out_tok[m], prices[m]) for m in models])

    train_q = {q for q, s in zip(questions, split) if s == "train"}
    overlap = sum(1 for q, s in zip(questions, split) if s == "test" and q in train_q)
    labels = carve_validation(split, val_fraction, seed)
    return [
        RoutingDataset(
            name="llmrouter",
            model_names=models,
            scores=scores,
            costs=costs,
            ids=ids,
            prompts=questions,
            prices=prices,
            groups=groups,
            split=labels,
            source=f"LLMRouter dcrouter_preprocessed train.json + test.json: {pre}",
            meta={
                "split_source": (
                    f"shipped train/test; val = seeded {val_fraction:.3g} of shipped train (seed={seed}); "
                    "shipped test untouched"
                ),
                "score_mapping": "LLMRouter task metrics as shipped, on [0, 1]",
                "cost_model": (
                    "estimated: (question chars/4 x input price + "
                    f"{sorted(set(out_tok.values()))} output tokens x output price) / 1e6, "
                    "prices from default_llm.json"
                ),
                "output_tokens": out_tok,
                "n_test_questions_in_train": overlap,
                "n_unlabelled_groups": groups.count("unknown"),
                "n_malformed_query_lines": n_bad_lines,
            },
        )
    ]


# Output tokens assumed per LLMRouter query (every model): the mean measured output tokens of the two
# models in RouterArena's cached results (claude-3-haiku 87.4, gemini-2.0-flash 67.2 over the same 809
# mixed-benchmark queries; mean 77.3), the closest real measurement of answer length on a mixed task pool
# in ../shared/data. tests/test_data.py recomputes it from the files.
LLMROUTER_OUTPUT_TOKENS = 77


# ------------------------------------------------------------------------------------------ RouteLLM
# USD per 1M input/output tokens, from RouterArena's model_cost/cost.json (entries "gpt-4-1106-preview"
# and "mistralai/mixtral-8x7b-instruct"); tests/test_data.py checks them against that file.
ROUTELLM_PRICES: dict[str, tuple[float, float]] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
    "gpt-4-1106-preview": (10.0, 30.0),
}
# MMLU ships no responses. Its prompts are multiple choice ending in "Answer:"; in RouterBench's ARC-C
# responses (also multiple choice) gpt-4-1106-preview and mixtral-8x7b-chat answer with a single letter
# (plus a newline for Mixtral), so one output token per query for both models.
MMLU_OUTPUT_TOKENS = 1.0


def _routellm_evals(path: PathLike) -> Path:
    root = Path(path)
    for cand in (root / "routellm" / "evals", root / "evals", root):
        if (cand / "mmlu").is_dir() or (cand / "gsm8k").is_dir() or (cand / "mt_bench").is_dir():
            return cand
    raise FileNotFoundError(f"{root}: no routellm/evals/ folder (RouteLLM evaluation data)")


def _contaminated(evals: Path, task: str) -> set[str]:
    f = evals / task / "contaminated_prompts.jsonl"
    if not f.is_file():
        return set()
    recs, _ = _read_jsonl(f)
    return {str(r["eval_prompt"]).strip() for r in recs if "eval_prompt" in r}


def _routellm_dataset(
    name: str,
    models: list[str],
    prompts: list[str],
    ids: list[str],
    scores: np.ndarray,
    costs: np.ndarray,
    groups: list[str] | None,
    source: str,
    meta: dict[str, Any],
    contaminated: set[str],
    drop_contaminated: bool,
) -> RoutingDataset:
    flag = np.array([p.strip() in contaminated for p in prompts])
    ds = RoutingDataset(
        name=name,
        model_names=models,
        scores=scores,
        costs=costs,
        ids=ids,
        prompts=prompts,
        prices={m: ROUTELLM_PRICES[m] for m in models},
        groups=groups,
        source=source,
        meta={**meta, "n_contaminated": int(flag.sum()), "contaminated": flag},
    )
    if drop_contaminated and flag.any():
        ds = ds.subset(~flag)
        ds.meta["notes"] = [
            *ds.meta.get("notes", []),
            f"{int(flag.sum())} RouteLLM-contaminated prompts dropped",
        ]
    return ds


def load_routellm_mmlu(path: PathLike, *, drop_contaminated: bool = False, **_: Any) -> list[RoutingDataset]:
    """RouteLLM MMLU: ``routellm/evals/mmlu/responses/mmlu_<subject>.csv`` (57 files).

    * Scores: ``True``/``False`` correctness of ``mistralai/Mixtral-8x7B-Instruct-v0.1`` and
      ``gpt-4-1106-preview`` -> 1/0.
    * Groups: the subject (from the file name). Ids ``<subject>/<row>``. No split shipped.
    * Costs (estimated): (prompt chars/4 x input price + :data:`MMLU_OUTPUT_TOKENS` x output price) / 1e6,
      prices :data:`ROUTELLM_PRICES` (RouterArena ``cost.json``: gpt-4-1106-preview 10/30,
      mixtral-8x7b-instruct 0.6/0.6 USD per 1M tokens).
    * ``meta["contaminated"]`` flags prompts RouteLLM lists as overlapping its router training data
      (``drop_contaminated=True`` drops them; kNN routers here are not trained on that data).
    """
    evals = _routellm_evals(path)
    files = sorted((evals / "mmlu" / "responses").glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"{evals}/mmlu/responses: no mmlu_<subject>.csv files")
    models = list(ROUTELLM_PRICES)
    prompts: list[str] = []
    ids: list[str] = []
    groups: list[str] = []
    blocks: list[np.ndarray] = []
    for f in files:
        df = _read_table(f)
        miss = [c for c in ["prompt", *models] if c not in df.columns]
        if miss:
            raise ValueError(f"{f}: missing required column(s) {miss}")
        subject = f.stem[len("mmlu_") :]
        sc = np.column_stack([_numeric(df[m], f, m) for m in models])
        for j, m in enumerate(models):
            _check_scores(sc[:, j], f, m)
        blocks.append(sc)
        ps = df["prompt"].astype(str).tolist()
        prompts += ps
        ids += [f"{subject}/{i}" for i in range(len(ps))]
        groups += [subject] * len(ps)
    scores = np.concatenate(blocks)
    _check_models_have_outcomes(scores, models, str(evals / "mmlu"))
    chars = np.array([len(p) for p in prompts], dtype=np.float64)
    costs = np.column_stack([estimate_cost(chars, MMLU_OUTPUT_TOKENS, ROUTELLM_PRICES[m]) for m in models])
    return [
        _routellm_dataset(
            "routellm-mmlu",
            models,
            prompts,
            ids,
            scores,
            costs,
            groups,
            f"RouteLLM MMLU responses ({len(files)} subject CSVs): {evals / 'mmlu' / 'responses'}",
            {
                "score_mapping": "correct True/False -> 1/0",
                "cost_model": (
                    f"estimated: (prompt chars/4 x input price + {MMLU_OUTPUT_TOKENS:g} output token x "
                    "output price) / 1e6; prices from RouterArena cost.json"
                ),
            },
            _contaminated(evals, "mmlu"),
            drop_contaminated,
        )
    ]


def load_routellm_gsm8k(path: PathLike, *, drop_contaminated: bool = False, **_: Any) -> list[RoutingDataset]:
    """RouteLLM GSM8K: ``routellm/evals/gsm8k/gsm8k_responses.csv`` (1,319 prompts, 2 models).

    * Scores: ``True``/``False`` correctness -> 1/0. Ids ``gsm8k/<row>``. No split, no groups.
    * Costs (estimated from the shipped responses): (question chars/4 x input price + response chars/4 x
      output price) / 1e6 per model, prices :data:`ROUTELLM_PRICES`. The question as shipped is the only
      input counted (any few-shot template RouteLLM wrapped it in is not known here).
    """
    evals = _routellm_evals(path)
    f = evals / "gsm8k" / "gsm8k_responses.csv"
    df = _read_table(f)
    models = list(ROUTELLM_PRICES)
    need = ["prompt", *models, *(m + "_response" for m in models)]
    miss = [c for c in need if c not in df.columns]
    if miss:
        raise ValueError(f"{f}: missing required column(s) {miss}")
    scores = np.column_stack([_numeric(df[m], f, m) for m in models])
    for j, m in enumerate(models):
        _check_scores(scores[:, j], f, m)
    _check_models_have_outcomes(scores, models, str(f))
    prompts = df["prompt"].astype(str).tolist()
    chars = np.array([len(p) for p in prompts], dtype=np.float64)
    costs = np.column_stack(
        [
            estimate_cost(
                chars,
                df[m + "_response"].fillna("").astype(str).str.len().to_numpy(dtype=np.float64)
                / CHARS_PER_TOKEN,
                ROUTELLM_PRICES[m],
            )
            for m in models
        ]
    )
    return [
        _routellm_dataset(
            "routellm-gsm8k",
            models,
            prompts,
            [f"gsm8k/{i}" for i in range(len(prompts))],
            scores,
            costs,
            None,
            f"RouteLLM GSM8K responses: {f}",
            {
                "score_mapping": "correct True/False -> 1/0",
                "cost_model": (
                    "estimated: (question chars/4 x input price + shipped response chars/4 x output price) "
                    "/ 1e6; prices from RouterArena cost.json"
                ),
            },
            _contaminated(evals, "gsm8k"),
            drop_contaminated,
        )
    ]


_MT_T1_START = "[The Start of Assistant's Answer]\n"
_MT_T1_END = "\n[The End of Assistant's Answer]"
_MT_CONV_START = "<|The Start of Assistant A's Conversation with User|>"
_MT_CONV_END = "<|The End of Assistant A's Conversation with User|>"


def _mt_answers(judgement: dict[str, Any], where: str) -> list[str]:
    """The model's answers (one per turn so far) embedded in a GPT-4 judge prompt."""
    u = str(judgement.get("user_prompt", ""))
    if int(judgement["turn"]) == 1:
        if _MT_T1_START not in u:
            raise ValueError(f"{where}: turn-1 judge prompt has no assistant answer block")
        return [u.split(_MT_T1_START, 1)[1].split(_MT_T1_END, 1)[0]]
    if _MT_CONV_START not in u:
        raise ValueError(f"{where}: turn-2 judge prompt has no assistant conversation block")
    conv = u.split(_MT_CONV_START, 1)[1].split(_MT_CONV_END, 1)[0]
    parts = re.split(r"\n*### (User|Assistant A):\n", conv)
    return [parts[k + 1] for k in range(1, len(parts) - 1, 2) if parts[k] == "Assistant A"]


def load_routellm_mtbench(
    path: PathLike, *, drop_contaminated: bool = False, **_: Any
) -> list[RoutingDataset]:
    """RouteLLM MT-Bench: ``routellm/evals/mt_bench/{judgements,question}.jsonl``.

    * Prompts: each (question, turn) is one routed prompt: 80 questions x 2 turns = 160 prompts. Turn 1
      is the first user message; turn 2 is both user messages joined by a blank line (the follow-up alone,
      "Rewrite your previous response...", says nothing about the task). Ids ``mtbench-<qid>-turn<t>``.
    * Scores: GPT-4 single-answer judgement on 1-10, mapped to ``score / 10`` (so [0.1, 1.0]).
    * Groups: the MT-Bench category. No split.
    * Costs (estimated from the answers embedded in the judge prompts): turn 1 = (q1 chars/4 x in +
      a1 chars/4 x out) / 1e6; turn 2 = ((q1 + a1 + q2) chars/4 x in + a2 chars/4 x out) / 1e6, where a1 is
      that model's own turn-1 answer. Prices :data:`ROUTELLM_PRICES`.
    """
    evals = _routellm_evals(path)
    fj = evals / "mt_bench" / "judgements.jsonl"
    fq = evals / "mt_bench" / "question.jsonl"
    for f in (fj, fq):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file")
        if f.stat().st_size == 0:
            raise ValueError(f"{f}: file is empty")
    judg, bad_j = _read_jsonl(fj)
    ques, bad_q = _read_jsonl(fq)
    if bad_j or bad_q:
        raise ValueError(f"{fj if bad_j else fq}: {bad_j or bad_q} malformed JSON line(s)")
    models = list(ROUTELLM_PRICES)
    qs = {int(q["question_id"]): q for q in ques}
    order = [(qid, t) for qid in qs for t in (1, 2)]
    row = {k: i for i, k in enumerate(order)}
    scores = np.full((len(order), len(models)), np.nan)
    costs = np.full_like(scores, np.nan)
    answers: dict[tuple[int, int, str], list[str]] = {}
    seen: dict[tuple[int, int, str], float] = {}
    for li, j in enumerate(judg):
        where = f"{fj}: line {li + 1}"
        try:
            qid, turn, model, raw = int(j["question_id"]), int(j["turn"]), str(j["model"]), j["score"]
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e}") from None
        if model not in models:
            raise ValueError(f"{where}: unknown model {model!r} (expected {models})")
        if (qid, turn) not in row:
            raise ValueError(f"{where}: question {qid} turn {turn} not in {fq.name}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"{where}: score {raw!r} is not a number")  # noqa: TRY004 (bad data -> ValueError)
        if not 1 <= raw <= 10:
            raise ValueError(f"{where}: score {raw!r} is outside the documented range [1, 10]")
        key = (qid, turn, model)
        if key in seen and seen[key] != raw:
            raise ValueError(f"{where}: duplicate judgement for {key} with a conflicting score")
        seen[key] = raw
        scores[row[(qid, turn)], models.index(model)] = raw / 10.0
        answers[key] = _mt_answers(j, where)
    _check_models_have_outcomes(scores, models, str(fj))
    prompts: list[str] = []
    groups: list[str] = []
    for qid, t in order:
        turns = [str(x) for x in qs[qid]["turns"]]
        prompts.append(turns[0] if t == 1 else turns[0] + "\n\n" + turns[1])
        groups.append(str(qs[qid].get("category", "unknown")))
    for (qid, t), i in row.items():
        turns = [str(x) for x in qs[qid]["turns"]]
        for jm, m in enumerate(models):
            a = answers.get((qid, t, m))
            if a is None:
                continue
            if t == 1:
                in_chars, out_chars = len(turns[0]), len(a[0])
            else:
                a1 = a[0] if len(a) > 1 else (answers.get((qid, 1, m)) or [""])[0]
                in_chars, out_chars = len(turns[0]) + len(a1) + len(turns[1]), len(a[-1])
            costs[i, jm] = float(estimate_cost(in_chars, out_chars / CHARS_PER_TOKEN, ROUTELLM_PRICES[m]))
    return [
        _routellm_dataset(
            "routellm-mtbench",
            models,
            prompts,
            [f"mtbench-{q}-turn{t}" for q, t in order],
            scores,
            costs,
            groups,
            f"RouteLLM MT-Bench GPT-4 judgements: {fj}",
            {
                "score_mapping": "GPT-4 judge score 1-10 -> score / 10",
                "cost_model": (
                    "estimated from the answers in the judge prompts: (context chars/4 x input price + "
                    "answer chars/4 x output price) / 1e6; prices from RouterArena cost.json"
                ),
            },
            _contaminated(evals, "mt_bench"),
            drop_contaminated,
        )
    ]


def load_routellm(path: PathLike, **kw: Any) -> list[RoutingDataset]:
    """All three RouteLLM evaluation sets: MMLU, GSM8K, MT-Bench (see each loader)."""
    return [
        *load_routellm_mmlu(path, **kw),
        *load_routellm_gsm8k(path, **kw),
        *load_routellm_mtbench(path, **kw),
    ]


# ---------------------------------------------------------------------------------------- RouterArena
def read_price_table(path: PathLike) -> dict[str, tuple[float, float]]:
    """A price table (USD per 1M input/output tokens) from JSON or CSV.

    Accepted: RouterArena's ``cost.json`` (``{model: {input_token_price_per_million, ...}}``), LLMRouter's
    ``{model: {input_price, output_price}}``, ``{model: [in, out]}``, or a CSV with columns ``model``,
    ``input_price``, ``output_price``.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv":
        df = _read_table(p)
        miss = [c for c in ("model", "input_price", "output_price") if c not in df.columns]
        if miss:
            raise ValueError(f"{p}: missing required column(s) {miss}")
        pin = _numeric(df["input_price"], p, "input_price")
        pout = _numeric(df["output_price"], p, "output_price")
        _check_costs(pin, p, "input_price")
        _check_costs(pout, p, "output_price")
        return {str(m): (float(a), float(b)) for m, a, b in zip(df["model"], pin, pout)}
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


def load_routerarena(path: PathLike, **_: Any) -> list[RoutingDataset]:
    """RouterArena cached results: ``routerarena-cached/cached_results/<model>.jsonl`` (+ ``model_cost/cost.json``).

    * Prompts: ``question`` (the full prompt sent), joined across models on ``global_index`` (the id).
      809 queries x 2 models in the shipped snapshot. No split. Groups: the source benchmark (the part of
      ``global_index`` before the first ``_``, e.g. ``MMLUPro``, ``PubMedQA``).
    * Scores: ``evaluation_result.score``. Mostly 0/1, but metrics such as METEOR give fractions, and one
      shipped value is slightly negative (-0.033, METEOR on NarrativeQA): scores are clipped to [0, 1];
      ``meta["n_scores_clipped"]`` counts the cells changed.
    * Costs: real, ``evaluation_result.inference_cost`` (USD; equals the token usage x the cost.json price).
      Token usage is kept in ``meta["input_tokens"]`` / ``meta["output_tokens"]`` ((n, M) arrays).
    * Prices: ``model_cost/cost.json`` entries for the models present.
    """
    root = Path(path)
    cr = _find_dir(root, "cached_results")
    files = sorted(cr.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{cr}: no <model>.jsonl files")
    models = [f.stem for f in files]
    per_model: list[dict[str, dict[str, Any]]] = []
    order: dict[str, None] = {}
    questions: dict[str, str] = {}
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"{f}: file is empty")
        recs, bad = _read_jsonl(f)
        if bad:
            raise ValueError(f"{f}: {bad} malformed JSON line(s)")
        by_id: dict[str, dict[str, Any]] = {}
        for li, r in enumerate(recs):
            where = f"{f}: line {li + 1}"
            try:
                gid = str(r["global_index"])
                q = str(r["question"])
                ev = r["evaluation_result"]
            except KeyError as e:
                raise ValueError(f"{where}: missing field {e}") from None
            if gid in by_id:
                raise ValueError(f"{where}: duplicate global_index {gid!r}")
            if gid in questions and questions[gid] != q:
                raise ValueError(f"{where}: question for {gid!r} differs from another model's file")
            questions[gid] = q
            order[gid] = None
            by_id[gid] = {"ev": ev or {}, "usage": r.get("token_usage") or {}, "where": where}
        per_model.append(by_id)
    gids = list(order)
    n, m = len(gids), len(models)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    tin = np.full((n, m), np.nan)
    tout = np.full((n, m), np.nan)
    for j, by_id in enumerate(per_model):
        for i, gid in enumerate(gids):
            rec = by_id.get(gid)
            if rec is None:
                continue
            ev, where = rec["ev"], rec["where"]
            s, c = ev.get("score"), ev.get("inference_cost")
            if s is not None:
                if isinstance(s, bool) or not isinstance(s, (int, float)):
                    raise ValueError(f"{where}: evaluation_result.score {s!r} is not a number")
                scores[i, j] = float(s)
            if c is not None:
                if isinstance(c, bool) or not isinstance(c, (int, float)):
                    raise ValueError(f"{where}: evaluation_result.inference_cost {c!r} is not a number")
                if c < 0:
                    raise ValueError(f"{where}: evaluation_result.inference_cost {c!r} is negative")
                costs[i, j] = float(c)
            tin[i, j] = float(rec["usage"].get("input_tokens", np.nan))
            tout[i, j] = float(rec["usage"].get("output_tokens", np.nan))
    _check_models_have_outcomes(scores, models, str(cr))
    clipped = int((~np.isnan(scores) & ((scores < 0) | (scores > 1))).sum())
    scores = np.clip(scores, 0.0, 1.0)
    prices = None
    cost_file = cr.parent / "model_cost" / "cost.json"
    if cost_file.is_file():
        table = read_price_table(cost_file)
        prices = {mm: table[mm] for mm in models if mm in table}
    return [
        RoutingDataset(
            name="routerarena",
            model_names=models,
            scores=scores,
            costs=costs,
            ids=gids,
            prompts=[questions[g] for g in gids],
            prices=prices,
            groups=[g.split("_", 1)[0] for g in gids],
            source=f"RouterArena cached_results ({len(files)} models): {cr}",
            meta={
                "score_mapping": "evaluation_result.score (0/1 and fractional metrics), clipped to [0, 1]",
                "n_scores_clipped": clipped,
                "notes": [f"{clipped} score cell(s) outside [0, 1] clipped"] if clipped else [],
                "cost_model": "real: evaluation_result.inference_cost (USD); prices from model_cost/cost.json",
                "input_tokens": tin,
                "output_tokens": tout,
            },
        )
    ]


# -------------------------------------------------------------------------------------- long format
LONG_REQUIRED = ("prompt_id", "model", "score")
LONG_GROUP_COLUMNS = ("task", "group")


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
    pd = _pd()
    p = Path(path)
    df = _read_table(p)
    cols = set(map(str, df.columns))
    missing = [c for c in LONG_REQUIRED if c not in cols]
    has_tokens = {"input_tokens", "output_tokens"} <= cols
    if "cost" not in cols and not has_tokens:
        missing.append("cost (or input_tokens + output_tokens with a price table)")
    if missing:
        raise ValueError(f"{p}: missing required column(s) {missing}; found {sorted(cols)}")
    if df["prompt_id"].isna().any():
        i = int(np.flatnonzero(df["prompt_id"].isna().to_numpy())[0])
        raise ValueError(f"{p}: {_row(i)}, column 'prompt_id' is empty")
    if df["model"].isna().any():
        i = int(np.flatnonzero(df["model"].isna().to_numpy())[0])
        raise ValueError(f"{p}: {_row(i)}, column 'model' is empty")
    pid = df["prompt_id"].astype(str).to_numpy()
    model = df["model"].astype(str).to_numpy()
    score = _numeric(df["score"], p, "score")
    _check_scores(score, p, "score")

    price_table: dict[str, tuple[float, float]] | None = None
    if prices is not None:
        price_table = (
            parse_prices(prices, "prices") if isinstance(prices, Mapping) else read_price_table(prices)
        )
    cost_from = "cost column (USD per query)"
    if "cost" in cols:
        cost = _numeric(df["cost"], p, "cost")
        _check_costs(cost, p, "cost")
    else:
        if price_table is None:
            raise ValueError(
                f"{p}: no 'cost' column, so a price table is needed: load_long(path, prices=...)"
            )
        tin = _numeric(df["input_tokens"], p, "input_tokens")
        tout = _numeric(df["output_tokens"], p, "output_tokens")
        _check_costs(tin, p, "input_tokens")
        _check_costs(tout, p, "output_tokens")
        nopr = sorted(set(model) - set(price_table))
        if nopr:
            raise ValueError(f"{p}: no price for model(s) {nopr} in the price table")
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
                    f"({_row(int(f))}: score {S[i, j]:g} cost {C[i, j]:g}; {_row(k)}: score {score[k]:g} "
                    f"cost {cost[k]:g})"
                )
            continue
        first_row[i, j] = k
        S[i, j] = score[k]
        C[i, j] = cost[k]
    _check_models_have_outcomes(S, models, str(p))

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
                    f"{p}: {_row(k)}, column {col!r}: prompt_id {ids[i]!r} has two different values"
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
        ids=ids,
        prompts=prompts,
        prices=ds_prices,
        groups=groups,
        split=split,
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
    """The dataset as a long-format ``pandas.DataFrame`` (every cell, NaN kept), inverse of :func:`load_long`."""
    pd = _pd()
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


# ------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetSpec:
    """A named real dataset under :func:`data_dir`.

    ``loader(folder, **kw) -> list[RoutingDataset]`` is called with ``data_dir() / folder``; ``detect``
    (optional) recognises the folder when a user passes its path instead of the name.
    """

    name: str
    folder: str
    loader: Callable[..., list[RoutingDataset]]
    description: str = ""
    detect: Callable[[Path], bool] | None = None


REAL_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    folder: str,
    loader: Callable[..., list[RoutingDataset]],
    description: str = "",
    detect: Callable[[Path], bool] | None = None,
    overwrite: bool = False,
) -> DatasetSpec:
    """Add a real dataset to the registry (the extension point for new benchmarks, e.g. MATH-V).

    After ``register_dataset("math-v", "math-v", load_mathv)``, ``load_dataset("math-v")`` and
    ``list_real_datasets()`` include it.
    """
    if name in REAL_DATASETS and not overwrite:
        raise ValueError(f"dataset name {name!r} is already registered (pass overwrite=True to replace it)")
    spec = DatasetSpec(name, folder, loader, description, detect)
    REAL_DATASETS[name] = spec
    return spec


def _is_routerbench_dir(p: Path) -> bool:
    if (p / "datasets" / "routerbench_zs").is_dir():
        return True
    for f in list(p.glob("*.csv"))[:3]:
        with open(f, encoding="utf-8", errors="replace") as fh:
            head = fh.readline()
        if _RB_SUFFIX_COST in head and "eval_name" in head:
            return True
    return False


register_dataset(
    "routerbench",
    "routerbench-0shot-subset",
    load_routerbench,
    "RouterBench 0-shot subset: arc_challenge, mbpp, winograde (11 models, real costs, shipped split)",
    _is_routerbench_dir,
)
register_dataset(
    "llmrouter",
    "llmrouter-dcrouter",
    load_llmrouter,
    "LLMRouter RouterDC data: 14 tasks, 9 models, prices (estimated costs, shipped split)",
    lambda p: (p / "data" / "dcrouter_preprocessed").is_dir() or (p / "dcrouter_preprocessed").is_dir(),
)
register_dataset(
    "routellm-mmlu", "routellm-evals", load_routellm_mmlu, "RouteLLM MMLU (57 subjects, 2 models)"
)
register_dataset("routellm-gsm8k", "routellm-evals", load_routellm_gsm8k, "RouteLLM GSM8K (2 models)")
register_dataset(
    "routellm-mtbench", "routellm-evals", load_routellm_mtbench, "RouteLLM MT-Bench (80 questions x 2 turns)"
)
register_dataset(
    "routerarena",
    "routerarena-cached",
    load_routerarena,
    "RouterArena cached results (2 models, real token usage and cost)",
    lambda p: (p / "cached_results").is_dir(),
)

# Folders that hold several registered datasets: a path to one loads them all.
_MULTI_FOLDERS: list[tuple[Callable[[Path], bool], Callable[..., list[RoutingDataset]]]] = [
    (lambda p: (p / "routellm" / "evals").is_dir() or (p / "mmlu" / "responses").is_dir(), load_routellm),
]


def list_real_datasets(root: PathLike | None = None) -> list[str]:
    """Names of the registered real datasets whose folder exists under ``root`` (default :func:`data_dir`).

    Empty when no data folder is found.
    """
    base = Path(root) if root is not None else data_dir(required=False)
    if base is None:
        return []
    return [name for name, spec in REAL_DATASETS.items() if (base / spec.folder).exists()]


def load_dataset(path_or_name: PathLike, **kw: Any) -> list[RoutingDataset]:
    """Load datasets from a registered name, a folder or a file; returns a list of datasets.

    * ``"demo"``: the generated demo benchmark (``generated=True``); ``kw`` go to
      :func:`knnroute.data.demo.make_demo`.
    * A registered name (:func:`list_real_datasets`): ``routerbench`` (-> ``arc_challenge``, ``mbpp``,
      ``winograde``), ``llmrouter``, ``routellm-mmlu``, ``routellm-gsm8k``, ``routellm-mtbench``,
      ``routerarena``, resolved under :func:`data_dir`.
    * A folder: recognised by its layout (RouterBench CSV folder, LLMRouter, RouteLLM evals -> its three
      sets, RouterArena, or any registered dataset's folder).
    * A file: ``.pkl`` -> RouterBench pickle; CSV/Parquet/JSONL with ``prompt_id``/``model``/``score``
      columns -> long format (:func:`load_long`); CSV/Parquet with ``eval_name`` and ``<model>|total_cost``
      columns -> RouterBench wide format.

    Keyword arguments go to the chosen loader (``seed``, ``by_task``, ``prices``, ``drop_contaminated``...).
    """
    if isinstance(path_or_name, str) and path_or_name in ("demo", "demo-generated"):
        from knnroute.data.demo import make_demo

        return [make_demo(**kw)]
    if isinstance(path_or_name, str) and path_or_name in REAL_DATASETS:
        spec = REAL_DATASETS[path_or_name]
        root = data_dir(required=True)
        folder = root / spec.folder  # type: ignore[operator]
        if not folder.exists():
            raise FileNotFoundError(
                f"dataset {path_or_name!r}: folder {folder} not found (set KNNROUTE_DATA to the real-data folder)"
            )
        return spec.loader(folder, **kw)
    p = Path(path_or_name)
    if p.is_dir():
        for spec in REAL_DATASETS.values():
            if spec.detect is not None and spec.detect(p):
                return spec.loader(p, **kw)
        for detect, loader in _MULTI_FOLDERS:
            if detect(p):
                return loader(p, **kw)
        for spec in REAL_DATASETS.values():
            if p.resolve().name == spec.folder:
                return spec.loader(p, **kw)
        raise ValueError(f"{p}: folder layout not recognised (known: {sorted(REAL_DATASETS)})")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".pkl", ".pickle"):
            return load_routerbench(p, **kw)
        if suffix in (".csv", ".parquet", ".pq", ".jsonl", ".ndjson"):
            cols = _columns(p)
            if {"prompt_id", "model"} <= cols:
                return [load_long(p, **kw)]
            if "eval_name" in cols and any(c.endswith(_RB_SUFFIX_COST) for c in cols):
                return load_routerbench(p, **kw)
            raise ValueError(
                f"{p}: columns not recognised: expected the long format (prompt_id, prompt, model, score, cost) "
                f"or RouterBench wide format (prompt, eval_name, <model>, <model>|total_cost); found {sorted(cols)[:12]}"
            )
        raise ValueError(f"{p}: unsupported file type {suffix!r} (use .csv, .parquet, .jsonl or .pkl)")
    known = ", ".join(["demo", *REAL_DATASETS])
    raise FileNotFoundError(f"{path_or_name!s}: not a file, a folder or a known dataset name ({known})")


def _columns(p: Path) -> set[str]:
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
    pd = _pd()
    try:
        return set(map(str, pd.read_csv(p, nrows=0).columns))
    except pd.errors.EmptyDataError:
        raise ValueError(f"{p}: file is empty") from None


def iter_real_datasets(names: Iterable[str] | None = None, **kw: Any) -> Iterable[RoutingDataset]:
    """Yield every dataset of ``names`` (default: all of :func:`list_real_datasets`)."""
    for name in names if names is not None else list_real_datasets():
        yield from load_dataset(name, **kw)
