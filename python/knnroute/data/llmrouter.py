"""LLMRouter (ulab-uiuc) RouterDC-format data (``llmrouter-dcrouter/``): see :func:`load_llmrouter`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.splits import SHIPPED_VAL_FRACTION, carve_validation
from knnroute.data.tables import (
    PathLike,
    check_models_have_outcomes,
    estimate_cost,
    read_jsonl,
)

__all__ = ["LLMROUTER_OUTPUT_TOKENS", "is_llmrouter_dir", "load_llmrouter"]


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
    check_models_have_outcomes(scores, models, str(pre))

    # task labels
    q2task: dict[str, str] = {}
    qd = d / "example_data" / "query_data"
    n_bad_lines = 0
    for part in ("train", "test"):
        f = qd / f"default_query_{part}.jsonl"
        if f.is_file():
            qrecs, bad = read_jsonl(f)
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

    train_q = {q for q, s in zip(questions, split, strict=True) if s == "train"}
    overlap = sum(1 for q, s in zip(questions, split, strict=True) if s == "test" and q in train_q)
    labels = carve_validation(split, val_fraction, seed)
    return [
        RoutingDataset(
            name="llmrouter",
            model_names=models,
            scores=scores,
            costs=costs,
            ids=np.asarray(ids, dtype=object),
            prompts=questions,
            prices=prices,
            groups=np.asarray(groups, dtype=object),
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


def is_llmrouter_dir(p: Path) -> bool:
    """Whether folder ``p`` is LLMRouter's data (``[data/]dcrouter_preprocessed/`` inside)."""
    return (p / "data" / "dcrouter_preprocessed").is_dir() or (p / "dcrouter_preprocessed").is_dir()
