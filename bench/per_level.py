"""The single-query (N = 10k and 100k) and batch tables once per ISA level this host supports.

Each level runs in its own process with ``KNNROUTE_ISA`` forced (the kernel set is chosen once per process),
and each process measures the references (NumPy, faiss ``IndexFlatIP``) again beside ours, in alternating
blocks of consecutive calls (each implementation warm in cache, as in ``bench_single.py``), so every ratio in a
level's table is from one run. Cases and aggregation are those of
``bench_single.py`` / ``bench_batch.py`` (d = 384, k = 100, M = 11, lambda = 200, one thread). An AVX-512 host
forced to ``avx2`` stands in for an AVX2 host (same instructions, not the same core or memory).

    python -m bench.per_level                      # every level, JSON to stdout-adjacent file, tables printed
    python -m bench.per_level --levels avx2 --out /tmp/avx2.json
    python -m bench.per_level --render run.json    # the markdown tables of a saved run

Not a pytest suite: a benchmark of a whole process per level. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bench.conftest as bc  # sets OPENBLAS_CORETYPE and OMP_WAIT_POLICY before NumPy loads a BLAS

np = bc.np
SINGLE_IMPLS = ["ours-f32", "ours-bf16", "ours-f16", "ours-int8", "numpy", "faiss"]
BATCH_IMPLS = ["ours", "ours-int8", "numpy", "faiss"]
REFS = ("numpy", "faiss")


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int, passes: int = 3) -> dict[str, float]:
    """Median seconds per call of each function. Each function runs its calls in consecutive blocks (a few
    warm-up calls, then rounds / passes timed ones), as bench_single.py does, so each implementation runs
    with its own data in cache; the blocks of all functions alternate for `passes` passes, so drifts in
    the host's load fall on every implementation alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    per_pass = max(1, rounds // passes)
    for _ in range(passes):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per_pass):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def call_next(route: Callable[[Any], Any], queries: Iterator[Any]) -> Any:
    return route(next(queries))


def single_case(n: int, rounds: int) -> dict:
    from threadpoolctl import threadpool_limits

    from bench.bench_single import make_impl, problem

    X, S, C, Q = problem(n, bc.D)
    out: dict = {"N": n, "impls": {}}
    with threadpool_limits(limits=1):
        fns: dict[str, Callable[[], Any]] = {}
        routed: dict[str, list[int]] = {}
        for impl in SINGLE_IMPLS:
            route, _ = make_impl(impl, X, S, C, 100, 1)
            routed[impl] = [int(route(q)) for q in Q]
            queries = itertools.cycle(list(Q))
            fns[impl] = functools.partial(call_next, route, queries)
        med = interleaved(fns, rounds, warmup=10)
    for impl in SINGLE_IMPLS:
        agree = float(np.mean(np.array(routed[impl]) == routed["ours-f32"]))
        out["impls"][impl] = {"ms": med[impl] * 1e3, "agree_f32": agree}
    return out


def batch_case(n: int, rounds: int) -> dict:
    from threadpoolctl import threadpool_limits

    from bench.bench_batch import make, problem

    X, S, C, Q = problem(n)
    with threadpool_limits(limits=1):
        fns: dict[str, Callable[[], Any]] = {}
        routed: dict[str, Any] = {}
        for impl in BATCH_IMPLS:
            f = make(impl, X, S, C, 1)
            routed[impl] = np.asarray(f(Q))
            fns[impl] = functools.partial(f, Q)
        med = interleaved(fns, rounds, warmup=1, passes=1)
    return {
        "N": n,
        "B": len(Q),
        "impls": {
            impl: {"ms": med[impl] * 1e3, "agree_f32": float(np.mean(routed[impl] == routed["ours"]))}
            for impl in BATCH_IMPLS
        },
    }


def child(rounds: int) -> dict:
    import knnroute_core as kc

    sizes = (5000,) if bc.QUICK else (10000, 100000)
    res = {
        "isa": kc.isa(),
        "cpu_model": bc.OPENBLAS_CHOICE.model,
        "openblas": os.environ.get("OPENBLAS_CORETYPE"),
        "loadavg_start": os.getloadavg(),
        "single": [single_case(n, rounds if n <= 10000 else max(20, rounds // 5)) for n in sizes],
        "batch": [batch_case(5000 if bc.QUICK else 10000, 3 if bc.QUICK else 7)],
    }
    res["loadavg_end"] = os.getloadavg()
    return res


def run_levels(levels: list[str], rounds: int) -> dict:
    runs = []
    for level in levels:
        env = {**os.environ, "KNNROUTE_ISA": level}
        t0 = time.time()
        p = subprocess.run(
            [sys.executable, "-m", "bench.per_level", "--child", "--rounds", str(rounds)],
            env=env, capture_output=True, text=True, check=False,
        )
        if p.returncode != 0:
            sys.exit(f"per_level: the {level} run failed: {p.stderr.strip().splitlines()[-1:]}")
        r = json.loads(p.stdout)
        if r["isa"] != level:
            sys.exit(f"per_level: asked for {level}, the run reports {r['isa']}")
        r["seconds"] = time.time() - t0
        runs.append(r)
        print(f"-- {level}: {r['seconds']:.0f} s", file=sys.stderr)
    return {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs}


def render(doc: dict) -> str:
    runs = doc["runs"]
    lines = [f"Run {doc['time']}; host: {runs[0]['cpu_model']}; one thread; medians; calls in alternating blocks.", ""]
    head = "| ISA level | " + " | ".join(r["isa"] for r in runs) + " |"
    sep = "|---|" + "---|" * len(runs)
    for si in range(len(runs[0]["single"])):
        n = runs[0]["single"][si]["N"]
        title = f"Single query (`route_one`), N = {n:,}, d = 384, k = 100, ms (ratio = fastest reference / ours):"
        lines += [title, "", head, sep]
        for impl in SINGLE_IMPLS:
            cells = []
            for r in runs:
                c = r["single"][si]["impls"]
                ms = c[impl]["ms"]
                best = min(c[x]["ms"] for x in REFS)
                cell = f"{ms:.3f}" if impl in REFS else f"{ms:.3f} ({best / ms:.2f}x)"
                if c[impl]["agree_f32"] < 1.0:
                    cell += f" agree {c[impl]['agree_f32']:.3f}"
                cells.append(cell)
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        speedups = [r["single"][si]["impls"]["ours-f32"]["ms"] / r["single"][si]["impls"]["ours-int8"]["ms"]
                    for r in runs]
        lines.append("| int8 vs our f32 | " + " | ".join(f"{x:.2f}x" for x in speedups) + " |")
        lines.append("")
    for bi in range(len(runs[0]["batch"])):
        b = runs[0]["batch"][bi]
        title = f"Batch of {b['B']:,} (`route`), N = {b['N']:,}, ms per batch (ratio = fastest reference / ours):"
        lines += [title, "", head, sep]
        for impl in BATCH_IMPLS:
            cells = []
            for r in runs:
                c = r["batch"][bi]["impls"]
                ms = c[impl]["ms"]
                best = min(c[x]["ms"] for x in REFS)
                cells.append(f"{ms:.1f}" if impl in REFS else f"{ms:.1f} ({best / ms:.2f}x)")
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Load average (1 min) at start / end of each level: " + ", ".join(
        f"{r['isa']} {r['loadavg_start'][0]:.1f}/{r['loadavg_end'][0]:.1f}" for r in runs) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", help="comma list (default: every level this host supports)")
    ap.add_argument("--rounds", type=int, default=20 if bc.QUICK else 400, help="rounds of the N = 10k case")
    ap.add_argument("--out", type=Path, help="write the run's JSON here")
    ap.add_argument("--render", type=Path, help="print the tables of a saved run and exit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.rounds)))
        return
    if a.render:
        print(render(json.loads(a.render.read_text())))
        return
    import knnroute_core as kc

    levels = a.levels.split(",") if a.levels else kc.available_isas()
    bad = [x for x in levels if x not in kc.available_isas()]
    if bad:
        sys.exit(f"per_level: not supported here: {', '.join(bad)} (available: {', '.join(kc.available_isas())})")
    doc = run_levels(levels, a.rounds)
    if a.out:
        a.out.write_text(json.dumps(doc, indent=1))
    print(render(doc))


if __name__ == "__main__":
    main()
