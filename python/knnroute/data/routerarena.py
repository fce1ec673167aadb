"""RouterArena cached results (``routerarena-cached/``): see :func:`load_routerarena`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.tables import (
    PathLike,
    check_models_have_outcomes,
    find_dir,
    read_jsonl,
    read_price_table,
)

__all__ = ["is_routerarena_dir", "load_routerarena"]


def load_routerarena(path: PathLike, **_: Any) -> list[RoutingDataset]:
    """RouterArena cached results: ``routerarena-cached/cached_results/<model>.jsonl`` (+ ``cost.json``).

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
    cr = find_dir(root, "cached_results")
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
        recs, bad = read_jsonl(f)
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
    check_models_have_outcomes(scores, models, str(cr))
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
            groups=np.asarray([g.split("_", 1)[0] for g in gids], dtype=object),
            source=f"RouterArena cached_results ({len(files)} models): {cr}",
            meta={
                "score_mapping": "evaluation_result.score (0/1 and fractional metrics), clipped to [0, 1]",
                "n_scores_clipped": clipped,
                "notes": [f"{clipped} score cell(s) outside [0, 1] clipped"] if clipped else [],
                "cost_model": (
                    "real: evaluation_result.inference_cost (USD); prices from model_cost/cost.json"
                ),
                "input_tokens": tin,
                "output_tokens": tout,
            },
        )
    ]



def is_routerarena_dir(p: Path) -> bool:
    """Whether folder ``p`` holds RouterArena's ``cached_results/``."""
    return (p / "cached_results").is_dir()
