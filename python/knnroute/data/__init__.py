"""Routing data: the dataset type, loaders for real benchmarks, splits, prompt hygiene, demo benchmark.

>>> from knnroute.data import load_dataset, list_real_datasets, resolve_spec
>>> [ds.name for ds in load_dataset("routerbench")]          # doctest: +SKIP
['arc_challenge', 'mbpp', 'winograde']
>>> [ds.name for ds in resolve_spec("demo,routellm-gsm8k")]  # doctest: +SKIP
['demo-generated', 'routellm-gsm8k']

Modules: :mod:`~knnroute.data.dataset` (the type), one module per source (:mod:`~knnroute.data.routerbench`,
:mod:`~knnroute.data.llmrouter`, :mod:`~knnroute.data.routellm`, :mod:`~knnroute.data.routerarena`,
:mod:`~knnroute.data.mathv`, :mod:`~knnroute.data.long` for the generic long format), the shared table
helpers (:mod:`~knnroute.data.tables`), the registry and :func:`load_dataset`
(:mod:`~knnroute.data.registry`), the ``--data`` spec parser (:mod:`~knnroute.data.spec`), splits, prompt
hygiene and the generated demo.

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
from knnroute.data.llmrouter import load_llmrouter
from knnroute.data.long import load_long, save_long, to_long
from knnroute.data.mathv import MATHV_PRICES, load_mathv
from knnroute.data.registry import (
    REAL_DATASETS,
    DatasetSpec,
    data_dir,
    iter_real_datasets,
    list_real_datasets,
    load_dataset,
    register_dataset,
)
from knnroute.data.routellm import (
    load_routellm,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
)
from knnroute.data.routerarena import load_routerarena
from knnroute.data.routerbench import load_routerbench
from knnroute.data.spec import resolve_spec
from knnroute.data.splits import carve_validation, cross_task_split, ensure_split, random_split, split_dataset
from knnroute.data.tables import estimate_cost, read_price_table

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
    "resolve_spec",
    "save_long",
    "split_dataset",
    "strip_common_prefix",
    "to_long",
]
