"""Routing data: the dataset type, loaders for real benchmarks, splits, prompt hygiene, demo benchmark.

>>> from knnroute.data import load_dataset, list_real_datasets
>>> [ds.name for ds in load_dataset("routerbench")]          # doctest: +SKIP
['arc_challenge', 'mbpp', 'winograde']

Importing this package needs only NumPy; pandas is imported by the loaders that read tables.
"""

from __future__ import annotations

from knnroute.data.dataset import SPLIT_LABELS, RoutingDataset, concat, normalize_rows
from knnroute.data.demo import DEMO_NAME, make_demo
from knnroute.data.hygiene import (
    PrefixStripper,
    common_prefix,
    decode_turns,
    prompt_text,
    strip_common_prefix,
)
from knnroute.data.loaders import (
    REAL_DATASETS,
    DatasetSpec,
    data_dir,
    estimate_cost,
    iter_real_datasets,
    list_real_datasets,
    load_dataset,
    load_llmrouter,
    load_long,
    load_routellm,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
    load_routerarena,
    load_routerbench,
    read_price_table,
    register_dataset,
    save_long,
    to_long,
)
from knnroute.data.mathv import MATHV_PRICES, load_mathv  # registers "math-v"
from knnroute.data.splits import carve_validation, cross_task_split, ensure_split, random_split, split_dataset

__all__ = [
    "DEMO_NAME",
    "MATHV_PRICES",
    "REAL_DATASETS",
    "SPLIT_LABELS",
    "DatasetSpec",
    "PrefixStripper",
    "RoutingDataset",
    "carve_validation",
    "common_prefix",
    "concat",
    "cross_task_split",
    "data_dir",
    "decode_turns",
    "ensure_split",
    "estimate_cost",
    "iter_real_datasets",
    "list_real_datasets",
    "load_dataset",
    "load_llmrouter",
    "load_long",
    "load_mathv",
    "load_routellm",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mtbench",
    "load_routerarena",
    "load_routerbench",
    "make_demo",
    "normalize_rows",
    "prompt_text",
    "random_split",
    "read_price_table",
    "register_dataset",
    "save_long",
    "split_dataset",
    "strip_common_prefix",
    "to_long",
]
