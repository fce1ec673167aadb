"""MATH-V (MATH-Vision): 3,040 image + question math problems, routed among 15 vision/text model setups.

Source: https://github.com/mathllm/MATH-V (MIT), the snapshot in ``$KNNROUTE_DATA/math-v`` (see its
SOURCE.md). Registered (in :mod:`knnroute.data.registry`) as ``"math-v"``: ``load_dataset("math-v")``,
``knnroute eval --data math-v`` (or the folder's path) find it.

* Items: ``data/test.jsonl`` (3,040 problems): ``question`` (with an ``<image1>`` placeholder), ``options``
  (empty for free-form answers), ``image`` (a path relative to the folder; every item has one), ``subject``
  (the group label; 16 subjects) and ``level``. The prompt text is the question, plus
  ``"\\n\\nOptions: (A) ... (B) ..."`` when there are options. ``meta["images"]`` holds each item's
  absolute image path ((n,) object array: it follows ``subset``); ``meta["modality"] = "text+image"``.
* Models: every per-item result file ``outputs/**/<setup>.jsonl`` except ``Random-Chance``: 15 setups
  (SOURCE.md says "14 + a random-chance baseline" but its own list, and the folder, hold 15). Model
  name = the file's stem (``"Gemini-Pro-CoT"``, ``"GPT4-CoT (Text Only)"``...). Pass ``setups=[...]`` to
  keep a subset, ``include_random=True`` to add the random-chance row.
* Scores: ``correct`` (bool) -> 1.0 / 0.0; a problem missing from a setup's file is NaN (none in the
  snapshot).
* Costs: no token counts ship, so each (item, setup) cost is estimated from lengths and a public list
  price (USD per 1M tokens)::

      cost = (len(prompt) / 4 * price_in + max(1, len(response) / 4) * price_out) / 1e6

  ``tokens ~= characters / 4`` (:data:`knnroute.data.tables.CHARS_PER_TOKEN`). Image input tokens are
  not charged (providers price images differently: per tile, per image, or as text tokens after the
  vision encoder, and we have no per-image rule common to all 15 setups), and the caption given to the
  "Text+Image Caption" setups is not in the data, so it is not charged either. Prices
  (:data:`MATHV_PRICES`; ``prices=`` overrides):

  ===================================  ==================  ===========  ============================
  setup(s)                             model               in / out     source (list price)
  ===================================  ==================  ===========  ============================
  GPT4-CoT (Text Only)                 gpt-4-0125-preview  10 / 30      openai.com/pricing (2024)
  ChatGPT3.5-CoT (Text+Image Caption)  gpt-3.5-turbo-0125  0.5 / 1.5    openai.com/pricing (2024)
  Gemini-Pro, Gemini-Pro-CoT           gemini-pro-vision   0.5 / 1.5    ai.google.dev/pricing, Gemini
                                                                        1.0 Pro pay-as-you-go (2024)
  Qwen-VL-Max, Qwen-VL-Max-CoT         qwen-vl-max         0.8 / 3.2    Alibaba Cloud Model Studio,
                                                                        international list price
  Qwen-VL-Plus                         qwen-vl-plus        0.21 / 0.63  Alibaba Cloud Model Studio
  LLaVA-v1.5-7B, ShareGPT4V-7B,        7B open weights     0.2 / 0.2    Together AI serverless size
  InternLM-XComposer2-VL(-CoT)                                          tier 4.1B-8B (2024)
  LLaVA-v1.5-13B, ShareGPT4V-13B,      13B open weights    0.3 / 0.3    Together AI tier 8.1B-21B
  SPHINX-v2
  SPHINX-MoE                           Mixtral-8x7B base   0.9 / 0.9    Together AI tier 41.1B-80B
                                       (46.7B total)                    (total parameters)
  ===================================  ==================  ===========  ============================

  The closed-model prices are the providers' published list prices as we know them (they were not
  re-fetched here: the machine is offline); open-weight models have no API price, so they get the
  per-size price of a public serverless host. Costs are therefore an estimate of relative cost (GPT-4 is
  ~100x a 7B model per token), which is what routing trades against; absolute USD are indicative.
  Responses of the answer-only setups are 2-5 characters (1 token), so their cost is mostly the prompt.
* Split: none ships (``testmini`` is a 304-item subset of the same problems), so evaluation draws the
  seeded 70/10/20 split.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.tables import CHARS_PER_TOKEN, find_dir, parse_prices, read_jsonl

__all__ = ["MATHV_PRICES", "MATHV_SETUP_MODEL", "is_mathv_dir", "load_mathv", "mathv_prompt"]

#: setup -> underlying model (for the price table)
MATHV_SETUP_MODEL: dict[str, str] = {
    "GPT4-CoT (Text Only)": "gpt-4-0125-preview",
    "ChatGPT3.5-CoT (Text+Image Caption)": "gpt-3.5-turbo-0125",
    "Gemini-Pro": "gemini-pro-vision",
    "Gemini-Pro-CoT": "gemini-pro-vision",
    "Qwen-VL-Max": "qwen-vl-max",
    "Qwen-VL-Max-CoT": "qwen-vl-max",
    "Qwen-VL-Plus": "qwen-vl-plus",
    "LLaVA-v1.5-7B": "open-7b",
    "ShareGPT4V-7B": "open-7b",
    "InternLM-XComposer2-VL": "open-7b",
    "InternLM-XComposer2-VL-CoT": "open-7b",
    "LLaVA-v1.5-13B": "open-13b",
    "ShareGPT4V-13B": "open-13b",
    "SPHINX-v2": "open-13b",
    "SPHINX-MoE": "open-moe-47b",
    "Random-Chance": "random",
}

#: model -> (USD per 1M input tokens, USD per 1M output tokens); sources in the module docstring
MATHV_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-3.5-turbo-0125": (0.5, 1.5),
    "gemini-pro-vision": (0.5, 1.5),
    "qwen-vl-max": (0.8, 3.2),
    "qwen-vl-plus": (0.21, 0.63),
    "open-7b": (0.2, 0.2),
    "open-13b": (0.3, 0.3),
    "open-moe-47b": (0.9, 0.9),
    "random": (0.0, 0.0),
}


def mathv_prompt(question: str, options: Sequence[Any]) -> str:
    """The prompt text of one problem: the question, then ``Options: (A) x (B) y ...`` when there are any."""
    q = str(question).strip()
    opts = [str(o) for o in (options or [])]
    if not opts:
        return q
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return q + "\n\nOptions: " + " ".join(f"({letters[i]}) {o}" for i, o in enumerate(opts[: len(letters)]))


def is_mathv_dir(p: Path) -> bool:
    """Whether folder ``p`` is the MATH-V snapshot (``data/test.jsonl``, ``outputs/``, ``images/``)."""
    return (p / "data" / "test.jsonl").is_file() and (p / "outputs").is_dir() and (p / "images").is_dir()


def load_mathv(
    path: str | os.PathLike,
    *,
    setups: Sequence[str] | None = None,
    include_random: bool = False,
    prices: Mapping[str, Any] | None = None,
    check_images: bool = True,
    **_: Any,
) -> list[RoutingDataset]:
    """Load MATH-V (see the module docstring) as one :class:`RoutingDataset` named ``"math-v"``.

    Parameters
    ----------
    path : folder
        The ``math-v`` folder (holding ``data/test.jsonl``, ``images/``, ``outputs/``).
    setups : sequence of str, optional
        Keep only these model setups (file stems), in this order.
    include_random : bool
        Also load ``Random-Chance`` (a random-answer baseline, not a model; off by default).
    prices : mapping, optional
        ``{model or setup: (in, out)}`` USD per 1M tokens, overriding :data:`MATHV_PRICES` entries.
    check_images : bool
        Raise ``FileNotFoundError`` when an item's image file is missing (default True).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MATH-V folder not found")
    data_file = find_dir(root, "data") / "test.jsonl"
    if not data_file.is_file():
        raise FileNotFoundError(f"{data_file}: MATH-V problems file not found")
    items, bad = read_jsonl(data_file)
    if bad:
        raise ValueError(f"{data_file}: {bad} malformed JSON line(s)")
    if not items:
        raise ValueError(f"{data_file}: no problems")
    ids: list[str] = []
    prompts: list[str] = []
    images: list[str] = []
    subjects: list[str] = []
    levels: list[int] = []
    for li, r in enumerate(items):
        where = f"{data_file}: line {li + 1}"
        try:
            pid, q, img = str(r["id"]), r["question"], r["image"]
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e}") from None
        ids.append(pid)
        prompts.append(mathv_prompt(q, r.get("options") or []))
        img_path = (root / str(img)).resolve() if img else None
        if img_path is not None and check_images and not img_path.is_file():
            raise FileNotFoundError(f"{where}: image {img_path} not found")
        images.append(str(img_path) if img_path is not None else "")
        subjects.append(str(r.get("subject", "")))
        levels.append(int(r.get("level") or 0))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{data_file}: duplicate problem ids")
    row = {pid: i for i, pid in enumerate(ids)}

    out_dir = find_dir(root, "outputs")
    files = {f.stem: f for f in sorted(out_dir.rglob("*.jsonl"))}
    if not include_random:
        files.pop("Random-Chance", None)
    if setups is not None:
        missing = [s for s in setups if s not in files]
        if missing:
            raise ValueError(f"{out_dir}: no per-item file for setup(s) {missing} (have {sorted(files)})")
        files = {s: files[s] for s in setups}
    if not files:
        raise FileNotFoundError(f"{out_dir}: no per-item <setup>.jsonl result files")
    table = dict(MATHV_PRICES)
    if prices:
        table.update(parse_prices(prices, "prices"))
    names = list(files)
    n, m = len(ids), len(names)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    out_chars = np.full((n, m), np.nan)
    in_chars = np.array([len(p) for p in prompts], dtype=np.float64)
    used_prices: dict[str, tuple[float, float]] = {}
    for j, setup in enumerate(names):
        f = files[setup]
        model = MATHV_SETUP_MODEL.get(setup, setup)
        price = table.get(setup, table.get(model))
        if price is None:
            raise ValueError(f"{f}: no price for setup {setup!r} (model {model!r}): pass prices={{...}}")
        used_prices[setup] = (float(price[0]), float(price[1]))
        recs, bad = read_jsonl(f)
        if bad:
            raise ValueError(f"{f}: {bad} malformed JSON line(s)")
        for li, r in enumerate(recs):
            i = row.get(str(r.get("id")))
            if i is None:
                raise ValueError(f"{f}: line {li + 1}: id {r.get('id')!r} is not a MATH-V problem id")
            c = r.get("correct")
            if not isinstance(c, (bool, np.bool_)):
                raise ValueError(f"{f}: line {li + 1}: 'correct' must be true/false, got {c!r}")  # noqa: TRY004
            scores[i, j] = 1.0 if c else 0.0
            out_chars[i, j] = len(str(r.get("response") or ""))
        tin = in_chars / CHARS_PER_TOKEN
        tout = np.maximum(1.0, out_chars[:, j] / CHARS_PER_TOKEN)
        costs[:, j] = np.where(np.isnan(out_chars[:, j]), np.nan, (tin * price[0] + tout * price[1]) / 1e6)
    return [
        RoutingDataset(
            name="math-v",
            model_names=names,
            scores=scores,
            costs=costs,
            ids=ids,
            prompts=prompts,
            prices=used_prices,
            groups=np.asarray(subjects, dtype=object),
            source=f"MATH-V test.jsonl + {m} per-item result files: {root}",
            meta={
                "modality": "text+image",
                "images": np.asarray(images, dtype=object),
                "levels": np.asarray(levels, dtype=np.int64),
                "score_mapping": "correct (bool) -> 1 / 0",
                "cost_model": "estimated: (prompt chars/4 x input price + max(1, response chars/4) x output "
                "price) / 1e6; image tokens not charged; prices: knnroute.data.mathv.MATHV_PRICES",
                "setup_model": {s: MATHV_SETUP_MODEL.get(s, s) for s in names},
                "response_chars": out_chars,
            },
        )
    ]

