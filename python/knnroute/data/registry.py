"""The dataset registry: named real datasets under the data folder, and :func:`load_dataset`.

:func:`load_dataset` takes one registered name, folder or file and returns a list of datasets; names
resolve under :func:`data_dir` (``$KNNROUTE_DATA`` or ``../shared/data``). A data *spec* (comma lists,
``all``) is parsed by :func:`knnroute.data.spec.resolve_spec` on top of this.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knnroute.data.dataset import RoutingDataset
from knnroute.data.demo import DEMO_NAME, make_demo
from knnroute.data.llmrouter import is_llmrouter_dir, load_llmrouter
from knnroute.data.long import LONG_FORMS, load_long
from knnroute.data.mathv import is_mathv_dir, load_mathv
from knnroute.data.routellm import (
    is_routellm_dir,
    load_routellm,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
)
from knnroute.data.routerarena import is_routerarena_dir, load_routerarena
from knnroute.data.routerbench import is_routerbench_dir, is_routerbench_wide, load_routerbench
from knnroute.data.tables import PathLike, table_columns

__all__ = [
    "DEMO_NAMES",
    "REAL_DATASETS",
    "DatasetSpec",
    "data_dir",
    "iter_real_datasets",
    "list_real_datasets",
    "load_dataset",
    "register_dataset",
]


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


DEMO_NAMES = ("demo", DEMO_NAME)
"""Names that load the generated demo benchmark (:func:`knnroute.data.demo.make_demo`)."""

register_dataset(
    "routerbench",
    "routerbench-0shot-subset",
    load_routerbench,
    "RouterBench 0-shot subset: arc_challenge, mbpp, winograde (11 models, real costs, shipped split)",
    is_routerbench_dir,
)
register_dataset(
    "llmrouter",
    "llmrouter-dcrouter",
    load_llmrouter,
    "LLMRouter RouterDC data: 14 tasks, 9 models, prices (estimated costs, shipped split)",
    is_llmrouter_dir,
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
    is_routerarena_dir,
)
register_dataset(
    "math-v",
    "math-v",
    load_mathv,
    "MATH-V: 3,040 image + question math problems, 15 vision/text setups (estimated costs)",
    is_mathv_dir,
)

# Folders that hold several registered datasets: a path to one loads them all.
_MULTI_FOLDERS: list[tuple[Callable[[Path], bool], Callable[..., list[RoutingDataset]]]] = [
    (is_routellm_dir, load_routellm),
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
    if isinstance(path_or_name, str) and path_or_name in DEMO_NAMES:
        return [make_demo(**kw)]
    if isinstance(path_or_name, str) and path_or_name in REAL_DATASETS:
        spec = REAL_DATASETS[path_or_name]
        root = data_dir(required=True)
        folder = root / spec.folder  # type: ignore[operator]
        if not folder.exists():
            raise FileNotFoundError(
                f"dataset {path_or_name!r}: folder {folder} not found "
                "(set KNNROUTE_DATA to the real-data folder)"
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
            cols = table_columns(p)
            if {"prompt_id", "model"} <= cols:
                return [load_long(p, **kw)]
            if is_routerbench_wide(cols):
                return load_routerbench(p, **kw)
            raise ValueError(_unrecognised_columns(p, cols))
        raise ValueError(f"{p}: unsupported file type {suffix!r} (use .csv, .parquet, .jsonl or .pkl)")
    known = ", ".join(["demo", *REAL_DATASETS])
    raise FileNotFoundError(f"{path_or_name!s}: not a file, a folder or a known dataset name ({known})")



def iter_real_datasets(names: Iterable[str] | None = None, **kw: Any) -> Iterable[RoutingDataset]:
    """Yield every dataset of ``names`` (default: all of :func:`list_real_datasets`)."""
    for name in names if names is not None else list_real_datasets():
        yield from load_dataset(name, **kw)


def _unrecognised_columns(p: Path, cols: set[str]) -> str:
    """The error for a table that is neither format: what is missing, near misses, and both forms."""
    import difflib

    missing = [c for c in ("prompt_id", "model") if c not in cols]
    hints = []
    for c in missing:
        close = difflib.get_close_matches(c, sorted(cols), n=1, cutoff=0.6)
        if close:
            hints.append(f"{close[0]!r} -> {c!r}?")
    hint = f" (did you mean {', '.join(hints)})" if hints else ""
    shown = sorted(cols)[:12]
    return (
        f"{p}: columns not recognised: missing {missing}{hint}; found {shown}"
        f"{' ...' if len(cols) > 12 else ''}. Accepted: the {LONG_FORMS}; or the RouterBench wide format: "
        "prompt, eval_name, <model>, <model>|total_cost"
    )
