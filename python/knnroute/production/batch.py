"""Batch routing: route every row of Parquet / CSV / JSONL files with a router file, write Parquet.

* :func:`route_batch` -- read prompts or precomputed embeddings (one file, a glob, a folder, or a list of
  them), embed (text) and route them, write the decisions to Parquet. With ``use_ray=True`` the work runs
  in Ray Data ``map_batches`` on an actor pool of ``workers`` actors, each of which loads the router file
  once (in its constructor, :class:`RouteBatch`), not once per batch; without Ray the same
  :class:`RouteBatch` runs in this process over the files in order. Both give the decisions of
  :meth:`ProductionRouter.decide <knnroute.production.router.ProductionRouter.decide>`.
* :func:`decide_batch` -- the decision columns for an embedding matrix.

Ray is optional (the ``ray`` extra: ``pip install '.[ray]' in the knnroute checkout``) and imported only with
``use_ray=True``; a missing install raises an ``ImportError`` that says so. Reading and writing files:
:mod:`knnroute.production.batch_io`.

Decision columns written by :func:`route_batch` (one row per input row, after the pass-through columns;
in input order without Ray; on Ray the order is not guaranteed, so keep an id column to join on):
``model`` (chosen model, the fallback model when the policy fired), ``routed_model`` (the router's own
argmax), ``fallback`` (``"distance"`` / ``"agreement"`` / null), ``lambda``, ``predicted_score`` and
``predicted_cost`` (of the chosen model: score on [0, 1], USD per query), ``kth_similarity`` and
``agreement`` (confidence; null with ``confidence=False``), and with ``all_models=True`` one
``score:<model>`` and ``cost:<model>`` column per model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knnroute._ray import init_ray
from knnroute.production.batch_io import (
    as_matrix,
    columns_of,
    iter_local,
    read_decisions,
    resolve_inputs,
    to_arrow_table,
)
from knnroute.production.files import load

__all__ = [
    "DECISION_COLUMNS",
    "BatchRouteResult",
    "RouteBatch",
    "decide_batch",
    "read_decisions",
    "resolve_inputs",
    "route_batch",
]

DECISION_COLUMNS: tuple[str, ...] = (
    "model",
    "routed_model",
    "fallback",
    "lambda",
    "predicted_score",
    "predicted_cost",
    "kth_similarity",
    "agreement",
)
# Rows per map_batches call (and per in-process chunk): big enough to amortise the call, small enough to
# keep a worker's memory flat.
DEFAULT_BATCH_SIZE = 4096


# ------------------------------------------------------------------------------------------ routing
def decide_batch(
    router: Any,
    X: np.ndarray,
    lam: float | None = None,
    max_cost: float | None = None,
    *,
    confidence: bool = True,
    all_models: bool = False,
) -> dict[str, np.ndarray]:
    """Route embeddings ``X`` (n, d) with a :class:`~knnroute.production.ProductionRouter`; decision columns.

    With ``confidence=True`` (or a fallback policy) every row goes through ``router.decide`` (the fused
    single-query path with confidence and fallback). With ``confidence=False`` and no fallback policy the
    batch path is used (``router.predict`` + argmax as in ``KNNRouter.route``: multi-threaded, several
    times faster) and the confidence columns are NaN.
    """
    names = router.model_names
    n = int(X.shape[0])
    lam_v, _ = router.resolve_lambda(lam, max_cost)
    out: dict[str, np.ndarray] = {}
    if confidence or router.fallback is not None:
        M = router.n_models
        S = np.empty((n, M), np.float32)
        C = np.empty((n, M), np.float32)
        idx = np.empty(n, np.int64)
        routed = np.empty(n, np.int64)
        kth = np.empty(n, np.float32)
        agr = np.empty(n, np.float32)
        fb = np.empty(n, dtype=object)
        Q = np.ascontiguousarray(X, dtype=np.float32)
        for i in range(n):
            d = router.decide(Q[i], lam_v)
            S[i], C[i] = d.s_hat, d.c_hat
            idx[i] = d.index
            routed[i] = d.index if d.fallback is None else names.index(d.routed_model)
            kth[i], agr[i] = d.kth_similarity, d.agreement
            fb[i] = d.fallback
    else:
        import knnroute_core

        S, C = router.predict(X)
        idx = np.asarray(knnroute_core.route(S, C, np.asarray([lam_v], np.float64)))[:, 0]
        routed = idx
        kth = np.full(n, np.nan, np.float32)
        agr = np.full(n, np.nan, np.float32)
        fb = np.full(n, None, dtype=object)
    name_arr = np.asarray(names, dtype=object)
    rows = np.arange(n)
    out["model"] = name_arr[idx] if n else np.empty(0, object)
    out["routed_model"] = name_arr[routed] if n else np.empty(0, object)
    out["fallback"] = fb
    out["lambda"] = np.full(n, lam_v, np.float64)
    out["predicted_score"] = S[rows, idx].astype(np.float64) if n else np.empty(0)
    out["predicted_cost"] = C[rows, idx].astype(np.float64) if n else np.empty(0)
    out["kth_similarity"] = kth.astype(np.float64)
    out["agreement"] = agr.astype(np.float64)
    if all_models:
        for j, m in enumerate(names):
            out[f"score:{m}"] = S[:, j].astype(np.float64)
            out[f"cost:{m}"] = C[:, j].astype(np.float64)
    return out


# Per-process count of router loads, so a test (and ``diagnostics=True``) can show that a worker loads the
# router file once, not once per batch.
_LOADS = {"n": 0}


class RouteBatch:
    """The ``map_batches`` callable: loads the router file once (constructor), routes each batch.

    Ray Data builds one instance per actor of the pool, so each worker process pays the load (mmap,
    checksum, one copy into the core) once and then routes every batch it is given. Also used as is for
    in-process batch routing.

    Parameters
    ----------
    router_path : path to a router file (``knnroute fit`` / ``ProductionRouter.save``)
    lam, max_cost : the cost weight, or a budget (mean USD per query) looked up in the file's budget table;
        neither: the file's ``default_lambda``
    embedding_column, prompt_column : which column to route (exactly one is set)
    keep_columns : input columns copied to the output in front of the decisions
    embedder : embedder spec or object to embed prompts with (default: the one recorded in the file; its
        identity must match the recorded one)
    confidence, all_models : see :func:`decide_batch`
    n_threads : core threads per worker (1 under Ray: one actor per CPU)
    verify : check the file's payload checksum at load
    diagnostics : add ``worker_pid`` and ``router_loads`` (loads in this process so far) columns
    """

    def __init__(
        self,
        router_path: str,
        lam: float | None = None,
        max_cost: float | None = None,
        *,
        embedding_column: str | None = None,
        prompt_column: str | None = None,
        keep_columns: Sequence[str] = (),
        embedder: Any = None,
        confidence: bool = True,
        all_models: bool = False,
        n_threads: int = 0,
        verify: bool = True,
        diagnostics: bool = False,
    ) -> None:
        if (embedding_column is None) == (prompt_column is None):
            raise ValueError("give exactly one of embedding_column or prompt_column")
        self.router = load(router_path, verify=verify)
        _LOADS["n"] += 1
        self.router.knn.n_threads = int(n_threads)
        if embedder is not None:
            self.router.set_embedder(embedder)
        self.router.resolve_lambda(lam, max_cost)  # fail now on a bad lam / missing budget table
        self.lam, self.max_cost = lam, max_cost
        self.embedding_column, self.prompt_column = embedding_column, prompt_column
        self.keep_columns = list(keep_columns)
        self.confidence, self.all_models, self.diagnostics = confidence, all_models, diagnostics

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.prompt_column is not None:
            texts = batch[self.prompt_column]
            bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
            if bad:
                col = self.prompt_column
                raise ValueError(f"column {col!r} row {bad[0]}: not a string ({texts[bad[0]]!r})")
            if len(texts):
                X = self.router.embed([str(t) for t in texts])
            else:
                X = np.zeros((0, self.router.dim), np.float32)
        else:
            assert self.embedding_column is not None  # exactly one column is set (checked in __init__)
            X = as_matrix(batch[self.embedding_column], self.embedding_column)
        if len(X) and X.shape[1] != self.router.dim:
            raise ValueError(
                f"embeddings have dimension {X.shape[1]}, the router has {self.router.dim} "
                "(embed with the router's embedder)"
            )
        out: dict[str, np.ndarray] = {c: np.asarray(batch[c]) for c in self.keep_columns}
        out.update(decide_batch(self.router, X, self.lam, self.max_cost, confidence=self.confidence,
                                all_models=self.all_models))
        if self.diagnostics:
            out["worker_pid"] = np.full(len(X), os.getpid(), np.int64)
            out["router_loads"] = np.full(len(X), _LOADS["n"], np.int64)
        return out


@dataclass
class BatchRouteResult:
    """What :func:`route_batch` did."""

    output: str
    rows: int
    files_in: int
    seconds: float
    workers: int
    engine: str  # "ray" or "local"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rows_per_second": self.rows_per_second}


def _choose_columns(columns: list[str], embedding_column: str | None, prompt_column: str | None,
                    keep_columns: Sequence[str] | None) -> tuple[str | None, str | None, list[str]]:
    if embedding_column is not None and prompt_column is not None:
        raise ValueError("give at most one of embedding_column / prompt_column")
    if embedding_column is None and prompt_column is None:
        if "embedding" in columns:
            embedding_column = "embedding"
        elif "prompt" in columns:
            prompt_column = "prompt"
        else:
            raise ValueError(
                f"no 'embedding' or 'prompt' column in the input (columns: {columns}); name one with "
                "embedding_column= / prompt_column= (--embedding-column / --prompt-column)"
            )
    want = embedding_column or prompt_column
    if columns and want not in columns:
        raise ValueError(f"column {want!r} is not in the input (columns: {columns})")
    if keep_columns is None:
        keep = [c for c in ("id",) if c in columns]
    else:
        keep = list(keep_columns)
        missing = [c for c in keep if columns and c not in columns]
        if missing:
            raise ValueError(f"keep columns {missing} are not in the input (columns: {columns})")
    clash = [c for c in keep if c in DECISION_COLUMNS]
    if clash:
        raise ValueError(f"keep columns {clash} clash with decision column names")
    return embedding_column, prompt_column, keep


def route_batch(
    router_path: str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    lam: float | None = None,
    max_cost: float | None = None,
    *,
    embedding_column: str | None = None,
    prompt_column: str | None = None,
    keep_columns: Sequence[str] | None = None,
    use_ray: bool = False,
    workers: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedder: Any = None,
    confidence: bool = True,
    all_models: bool = False,
    verify: bool = True,
    diagnostics: bool = False,
    preserve_order: bool = True,
    progress: bool = True,
    ray_address: str | None = None,
) -> BatchRouteResult:
    """Route every row of ``inputs`` with the router file; write the decisions as Parquet under ``output``.

    Parameters
    ----------
    router_path : router file
    inputs : file, glob (``logs/*.parquet``), folder, or a list of them; one format (Parquet, CSV, JSONL)
    output : folder for the Parquet output (created; ``part-*.parquet`` / Ray's block files)
    lam, max_cost : cost weight, or a budget via the file's budget table (neither: the file's default)
    embedding_column / prompt_column : the column to route (default: ``embedding`` if present, else
        ``prompt``). Embeddings: a list / fixed-size-list column (Parquet, JSONL) or JSON-list strings (CSV).
    keep_columns : input columns copied to the output (default: ``id`` when present; carry one to join on)
    use_ray : run in Ray Data (``workers`` actors, each loading the file once); else in this process
    workers : Ray actor-pool size (one CPU each)
    batch_size : rows per batch
    embedder : embedder spec / object for prompts (default: the file's recorded embedder)
    confidence, all_models : see :func:`decide_batch`
    preserve_order : Ray: ask Ray Data to keep the input order (``DataContext...preserve_order``). Best effort
        only: the order of the written rows was not always the input order in our tests, so join the
        decisions to the input on a kept id column
    ray_address : connect to this Ray cluster (default: the running one, or start a local one)

    Returns
    -------
    BatchRouteResult (rows, seconds, rows per second, output folder)
    """
    router_path = str(Path(router_path).expanduser())
    if not Path(router_path).is_file():
        raise FileNotFoundError(f"router file {router_path!r} not found")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths, fmt = resolve_inputs(inputs)
    cols = columns_of(paths, fmt)
    emb_col, prompt_col, keep = _choose_columns(cols, embedding_column, prompt_column, keep_columns)
    out_dir = Path(output).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {str(out_dir)!r} exists and is not empty")
    kwargs: dict[str, Any] = {
        "embedding_column": emb_col, "prompt_column": prompt_col, "keep_columns": keep, "embedder": embedder,
        "confidence": confidence, "all_models": all_models, "verify": verify, "diagnostics": diagnostics,
    }
    routed_col = emb_col or prompt_col
    assert routed_col is not None  # _choose_columns sets exactly one
    read_cols = [*keep, routed_col]
    t0 = time.perf_counter()
    if not use_ray:
        udf = RouteBatch(router_path, lam, max_cost, n_threads=0, **kwargs)
        import pyarrow.parquet as pq

        out_dir.mkdir(parents=True, exist_ok=True)
        rows = 0
        writers: dict[int, Any] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="route", unit="row", dynamic_ncols=True)
        try:
            for fi, batch in iter_local(paths, fmt, read_cols, batch_size):
                tbl = to_arrow_table(udf(batch))
                if fi not in writers:
                    writers[fi] = pq.ParquetWriter(str(out_dir / f"part-{fi:05d}.parquet"), tbl.schema)
                writers[fi].write_table(tbl)
                rows += tbl.num_rows
                if bar is not None:
                    bar.update(tbl.num_rows)
        finally:
            for w in writers.values():
                w.close()
            if bar is not None:
                bar.close()
        return BatchRouteResult(str(out_dir), rows, len(paths), time.perf_counter() - t0, 1, "local")

    ray = init_ray(ray_address)
    from ray import data as rdata

    # Ray Data's file listing task needs one whole CPU: a pool holding every CPU would starve it and the
    # pipeline would never start. So the pool reserves at most all-but-one CPU of the cluster (a logical
    # reservation: each actor routes on one thread either way).
    total = float(ray.cluster_resources().get("CPU", 1.0))
    cpus_per_worker = min(1.0, max(total - 1.0, 0.0) / workers)
    if cpus_per_worker <= 0:
        raise RuntimeError(f"the Ray cluster has {total:g} CPU(s): batch routing on Ray needs at least 2 "
                           "(one for reading and writing, the rest for the routing actors)")

    ctx = rdata.DataContext.get_current()
    ctx.execution_options.preserve_order = bool(preserve_order)
    ctx.enable_progress_bars = bool(progress)
    readers = {"parquet": rdata.read_parquet, "csv": rdata.read_csv, "json": rdata.read_json}
    # Read and write tasks reserve no CPU (I/O and (de)serialisation only) so they run beside the pool.
    # At least a few blocks per worker so the pool shares the work (small inputs would be one block).
    ds = readers[fmt](paths, num_cpus=0, override_num_blocks=max(len(paths), 4 * int(workers)))
    ds = ds.select_columns(read_cols)  # pushed down into the Parquet read by Ray's optimiser
    ds = ds.map_batches(
        RouteBatch,
        fn_constructor_args=(router_path, lam, max_cost),
        fn_constructor_kwargs={**kwargs, "n_threads": 1},
        batch_size=batch_size,
        batch_format="numpy",
        compute=rdata.ActorPoolStrategy(size=int(workers)),
        num_cpus=cpus_per_worker,
    )
    ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(out_dir.glob("*.parquet")))
    return BatchRouteResult(str(out_dir), rows, len(paths), seconds, int(workers), "ray")


