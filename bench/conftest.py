"""Benchmark harness: sizes from env vars, references at their best, results as diffable JSON + a table.

Run (full): ``python -m pytest bench -p no:cacheprovider -o testpaths=bench --benchmark-disable-gc -q``
Quick CI smoke run: ``KNNROUTE_BENCH_QUICK=1`` (tiny sizes, few rounds; figures are not meaningful).

Environment (all optional):
- ``KNNROUTE_BENCH_QUICK=1``            quick mode
- ``KNNROUTE_BENCH_N=1000,10000,100000`` support sizes of the single-query cases
- ``KNNROUTE_BENCH_ROUNDS=300``          rounds per single-query case (batch/eval cases use fewer)
- ``KNNROUTE_BENCH_HNSW_N=1000000``      support size of the approximate-index case
- ``KNNROUTE_BENCH_OUT=bench/results``   where the run's JSON and markdown table go

Reference settings (so every reference runs at its best on this machine):
- ``OPENBLAS_CORETYPE`` read from the CPU (:mod:`bench.cpu`): the faiss-cpu wheel bundles its own OpenBLAS,
  which mis-detected an AMD Zen 4 VM and picked an old kernel (batch search 5-10x slower). ``SkylakeX`` (the
  AVX-512 kernel) only where the CPU has AVX-512F/BW/VL/DQ/CD, ``Zen`` on AMD with AVX2, ``Haswell`` on other
  AVX2+FMA CPUs, unset otherwise. Forcing SkylakeX on an AVX2-only CPU (as this file once did) makes OpenBLAS
  execute AVX-512 instructions and kills the process with SIGILL. A value already in the environment is kept
  only if the CPU can run it. The choice and its reason go into every result's ``meta``. Set before any BLAS
  loads (this file is imported first).
- ``OMP_WAIT_POLICY=PASSIVE``: OpenMP pools (faiss, and the BLAS threads) block instead of spinning, so they
  do not steal the second core from the library measured next.
- Thread counts are set per case for every library with threadpoolctl (BLAS, OpenMP), faiss.omp_set_num_threads,
  hnswlib's num_threads and knnroute's query_threads / n_threads.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.cpu import choose_openblas_coretype  # noqa: E402  (stdlib only: loads no BLAS)

_NUMPY_WAS_LOADED = "numpy" in sys.modules
OPENBLAS_CHOICE = choose_openblas_coretype(os.environ.get("OPENBLAS_CORETYPE"))
if OPENBLAS_CHOICE.coretype is None:
    os.environ.pop("OPENBLAS_CORETYPE", None)
else:
    os.environ["OPENBLAS_CORETYPE"] = OPENBLAS_CHOICE.coretype
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

QUICK = os.environ.get("KNNROUTE_BENCH_QUICK", "") == "1"
ROOT = Path(__file__).resolve().parent
OUT = Path(os.environ.get("KNNROUTE_BENCH_OUT", ROOT / "results"))
SEED = 20240601
D = 384
M = 11


def env_ints(name: str, default: str, quick: str) -> list[int]:
    raw = os.environ.get(name) or (quick if QUICK else default)
    return [int(x) for x in raw.split(",") if x.strip()]


SINGLE_N = env_ints("KNNROUTE_BENCH_N", "1000,10000,100000", "1000,10000")
ROUNDS = env_ints("KNNROUTE_BENCH_ROUNDS", "300", "20")[0]
HNSW_N = env_ints("KNNROUTE_BENCH_HNSW_N", "1000000", "20000")[0]

# --- data ------------------------------------------------------------------------------------------


def clustered(n: int, d: int = D, seed: int = SEED, centers: int | None = None, noise: float = 1.0) -> np.ndarray:
    """Unit-norm float32 rows drawn around random centres: neighbours have cosine ~0.5, strangers ~0,
    like sentence embeddings of prompts from a few hundred topics (uniform random vectors are the
    worst case for graph indexes and unlike real embeddings)."""
    rng = np.random.default_rng(seed)
    centers = centers or max(16, min(2000, n // 500))
    C = rng.standard_normal((centers, d)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    step = 1 << 16
    for s in range(0, n, step):
        e = min(n, s + step)
        X[s:e] = C[rng.integers(0, centers, e - s)] + noise * rng.standard_normal((e - s, d), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def outcomes(n: int, seed: int = SEED + 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores in {0, 1} and costs in USD per query for M models (no missing cells, so every reference's
    plain mean is the paper's aggregation)."""
    rng = np.random.default_rng(seed)
    price = np.geomspace(2e-5, 3e-3, M)
    S = (rng.random((n, M)) < np.linspace(0.35, 0.85, M)).astype(np.float32)
    C = (price * rng.uniform(0.5, 1.5, (n, M))).astype(np.float32)
    return S, C


# --- results ------------------------------------------------------------------------------------------

RESULTS: dict = {"cases": {}, "bounds": {}, "meta": {"loadavg_at_start": os.getloadavg()}}


def stats(times: list[float]) -> dict:
    a = np.asarray(times, dtype=np.float64)
    return {
        "p50_ms": float(np.median(a) * 1e3),
        "p99_ms": float(np.percentile(a, 99) * 1e3),
        "mean_ms": float(a.mean() * 1e3),
        "rounds": int(len(a)),
    }


def record(case: str, impl: str, times: list[float] | None = None, **extra) -> dict:
    entry = stats(times) if times is not None else {}
    entry.update(extra)
    RESULTS["cases"].setdefault(case, {})[impl] = entry
    return entry


def run_bench(benchmark, fn, rounds: int, warmup: int = 3) -> list[float]:
    """Time fn() once per round with pytest-benchmark; returns the per-round wall times (seconds)."""
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return list(benchmark.stats.stats.data)


@pytest.fixture(scope="session")
def bounds() -> dict:
    """Physical limits measured in this run, for 1 and 2 threads: streaming read bandwidth (NumPy's
    BLAS sgemv over 1 GiB) and single-precision GEMM GFLOP/s (NumPy's BLAS, 2048^3)."""
    if RESULTS["bounds"]:
        return RESULTS["bounds"]
    from threadpoolctl import threadpool_limits

    out: dict = {}
    gib = (1 << 28) if not QUICK else (1 << 26)  # floats: 1 GiB (quick: 256 MiB)
    # The read probe is an sgemv over a (16384, 65536) float32 matrix: one streaming pass over 1 GiB
    # with a 256 KiB vector that stays in L2 (the same operation as NumPy's single query, X @ q).
    big = np.ones(gib, np.float32).reshape(-1, 1 << 16)
    ones = np.ones(1 << 16, np.float32)
    n2048 = 2048 if not QUICK else 1024
    A = np.random.default_rng(0).standard_normal((n2048, n2048), dtype=np.float32)
    for t in (1, 2):
        with threadpool_limits(limits=t):
            big @ ones
            best = []
            for _ in range(7 if not QUICK else 2):
                t0 = time.perf_counter()
                big @ ones
                best.append(time.perf_counter() - t0)
            bw = big.nbytes / float(np.median(best))
            A @ A
            g = []
            for _ in range(7 if not QUICK else 2):
                t0 = time.perf_counter()
                A @ A
                g.append(time.perf_counter() - t0)
            gflops = 2 * n2048**3 / float(np.median(g)) / 1e9
        out[f"read_GBps_{t}t"] = bw / 1e9
        out[f"sgemm_GFLOPs_{t}t"] = gflops
    out["read_bytes"] = int(big.nbytes)
    del big
    RESULTS["bounds"].update(out)
    return RESULTS["bounds"]


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    if not RESULTS["cases"]:
        return
    import knnroute_core as kc

    try:
        import threadpoolctl

        pools = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture", "filepath")}
            for p in threadpoolctl.threadpool_info()
        ]
    except Exception:  # pragma: no cover
        pools = []
    RESULTS["meta"].update(
        {
            "quick": QUICK,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "isa": kc.isa(),
            "pool_threads": kc.pool_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "openblas_coretype_reason": OPENBLAS_CHOICE.reason,
            "cpu_model": OPENBLAS_CHOICE.model,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "numpy_loaded_before_env": _NUMPY_WAS_LOADED,
            "threadpools": pools,
            "sizes": {"single_N": SINGLE_N, "rounds": ROUNDS, "hnsw_N": HNSW_N, "d": D, "M": M},
        }
    )
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(RESULTS, indent=1, sort_keys=True, default=float)
    (OUT / f"run-{stamp}.json").write_text(text)
    (OUT / "latest.json").write_text(text)
    from bench.table import render

    md = render(RESULTS)
    (OUT / "latest.md").write_text(md)
    session.config._knnroute_table = md  # printed by the terminal summary hook


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    md = getattr(config, "_knnroute_table", None)
    if md:
        terminalreporter.write_sep("=", "knnroute benchmark table (bench/results/latest.md)")
        terminalreporter.write_line(md)
