"""The data spec: what ``--data`` takes on every command (``eval``, ``fit``, ``route-batch``).

A spec is one item or several, comma separated; each item is

* ``demo`` (or ``demo-generated``): the generated demo benchmark (labelled ``generated=True``);
* ``all``: every registered real dataset whose folder is under the data folder
  (:func:`~knnroute.data.registry.list_real_datasets`, in registry order);
* a registered name (``routerbench``, ``llmrouter``, ``routellm-mmlu``, ``math-v``, ...);
* a path: a folder recognised by its layout, or a file (long format, RouterBench wide format or pickle);
* the name of a folder under the data folder (``routerbench-0shot-subset``, ``routellm-evals``...).

:func:`resolve_spec` turns a spec into the list of datasets, in the spec's order; :func:`pool` makes one
dataset of them (for a command that fits one router).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from knnroute.data import registry
from knnroute.data.dataset import RoutingDataset, concat
from knnroute.data.long import PRICE_FORMS
from knnroute.data.registry import DEMO_NAMES, data_dir, list_real_datasets, load_dataset
from knnroute.data.splits import ensure_split
from knnroute.data.tables import table_columns

__all__ = ["SPEC_HELP", "pool", "resolve_spec", "spec_items"]

SPEC_HELP = (
    "demo (the generated demo benchmark), all (every real dataset found), a dataset name (routerbench, "
    "llmrouter, routellm-mmlu, ...), or a file/folder path; comma separated for several"
)
"""The ``--data`` help text every command shows."""


def spec_items(spec: str) -> list[str]:
    """The items of a spec: split on commas, blanks dropped; ``ValueError`` when none is left."""
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ValueError(f"--data: empty data spec {spec!r}; expected e.g. demo, all, routerbench or a path")
    return items


def _resolve_item(item: str) -> str:
    """A demo or registered name or an existing path as is; else that folder under the data folder."""
    if item in DEMO_NAMES or item in registry.REAL_DATASETS or Path(item).exists():
        return item
    root = data_dir(required=False)
    if root is not None and (root / item).exists():
        return str(root / item)
    return item


def resolve_spec(spec: str, *, seed: int = 0, prices: str | Path | None = None) -> list[RoutingDataset]:
    """The datasets a data spec names (see the module docstring), in the spec's order.

    Parameters
    ----------
    spec : str
        One item or a comma list of items: ``demo``, ``all``, a registered name, a path, or a folder name
        under :func:`~knnroute.data.registry.data_dir`.
    seed : int
        Passed to the real-data loaders (it seeds the validation share carved from a shipped train split);
        the demo benchmark is always the same (seed 0) so that every command sees the same demo.
    prices : path, optional
        A price table file (JSON or CSV, see :func:`~knnroute.data.tables.read_price_table`) for the
        long-format files of the spec: their ``input_tokens``/``output_tokens`` become costs (the
        commands' ``--prices FILE``). ``ValueError`` when the spec has no long-format file to use it on.

    Raises
    ------
    ValueError
        An empty spec, an unrecognised file or folder.
    FileNotFoundError
        A name that is neither registered nor a path, ``all`` with no real data found, a registered name
        whose folder is missing.
    """
    out: list[RoutingDataset] = []
    if prices is not None and not Path(prices).is_file():
        raise FileNotFoundError(f"--prices: {prices} is not a file ({PRICE_FORMS})")
    used_prices = False
    for item in spec_items(spec):
        if item == "all":
            names = list_real_datasets()
            if not names:
                raise FileNotFoundError(
                    "--data all: no real data found; set KNNROUTE_DATA to the folder holding "
                    "routerbench-0shot-subset/ etc."
                )
            for name in names:
                out.extend(load_dataset(name, seed=seed))
        elif item in DEMO_NAMES:
            out.extend(load_dataset(item))
        else:
            path = _resolve_item(item)
            if prices is not None and _is_long_file(path):
                out.extend(load_dataset(path, seed=seed, prices=prices))
                used_prices = True
            else:
                out.extend(load_dataset(path, seed=seed))
    if prices is not None and not used_prices:
        raise ValueError(
            f"--prices applies to long-format files (prompt_id, model, score, input_tokens, output_tokens); "
            f"the data spec {spec!r} has none (built-in datasets carry their own costs)"
        )
    return out


def _is_long_file(item: str) -> bool:
    """Whether ``item`` is a CSV/Parquet/JSONL file with the long format's key columns."""
    p = Path(item)
    if not p.is_file() or p.suffix.lower() not in (".csv", ".parquet", ".pq", ".jsonl", ".ndjson"):
        return False
    return {"prompt_id", "model"} <= table_columns(p)


def pool(datasets: Sequence[RoutingDataset], name: str, seed: int = 0) -> RoutingDataset:
    """One dataset from several (stacked with :func:`~knnroute.data.dataset.concat`), with a split.

    A single dataset is kept as it is (its name too); several must share one model pool, in one order
    (``ValueError`` naming the first that differs). Without a split, a seeded 70/10/20 one is drawn.
    """
    if not datasets:
        raise ValueError("no datasets to pool")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.model_names != first.model_names:
            raise ValueError(
                f"{name!r}: {ds.name!r} and {first.name!r} have different models, so they cannot be pooled "
                "into one router; name datasets that share one model pool (e.g. routerbench's tasks)"
            )
    ds = first if len(datasets) == 1 else concat(datasets, name=name)
    return ensure_split(ds, seed)
