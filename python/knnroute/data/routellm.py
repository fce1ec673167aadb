"""RouteLLM evaluation data (``routellm-evals/``): MMLU, GSM8K and MT-Bench, two models each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.tables import (
    CHARS_PER_TOKEN,
    PathLike,
    check_models_have_outcomes,
    check_scores,
    estimate_cost,
    numeric_column,
    read_jsonl,
    read_table,
)

__all__ = [
    "MMLU_OUTPUT_TOKENS",
    "ROUTELLM_PRICES",
    "is_routellm_dir",
    "load_routellm",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mtbench",
]


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
    recs, _ = read_jsonl(f)
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
        groups=None if groups is None else np.asarray(groups, dtype=object),
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
        df = read_table(f)
        miss = [c for c in ["prompt", *models] if c not in df.columns]
        if miss:
            raise ValueError(f"{f}: missing required column(s) {miss}")
        subject = f.stem[len("mmlu_") :]
        sc = np.column_stack([numeric_column(df[m], f, m) for m in models])
        for j, m in enumerate(models):
            check_scores(sc[:, j], f, m)
        blocks.append(sc)
        ps = df["prompt"].astype(str).tolist()
        prompts += ps
        ids += [f"{subject}/{i}" for i in range(len(ps))]
        groups += [subject] * len(ps)
    scores = np.concatenate(blocks)
    check_models_have_outcomes(scores, models, str(evals / "mmlu"))
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
    df = read_table(f)
    models = list(ROUTELLM_PRICES)
    need = ["prompt", *models, *(m + "_response" for m in models)]
    miss = [c for c in need if c not in df.columns]
    if miss:
        raise ValueError(f"{f}: missing required column(s) {miss}")
    scores = np.column_stack([numeric_column(df[m], f, m) for m in models])
    for j, m in enumerate(models):
        check_scores(scores[:, j], f, m)
    check_models_have_outcomes(scores, models, str(f))
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
    judg, bad_j = read_jsonl(fj)
    ques, bad_q = read_jsonl(fq)
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
    check_models_have_outcomes(scores, models, str(fj))
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



def is_routellm_dir(p: Path) -> bool:
    """Whether folder ``p`` holds RouteLLM's evals (all three sets load from it)."""
    return (p / "routellm" / "evals").is_dir() or (p / "mmlu" / "responses").is_dir()
