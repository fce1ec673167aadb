#!/usr/bin/env bash
# CI: run the benchmarks once in quick mode (tiny sizes, a few rounds) as a smoke test: the benchmark code
# paths and their references still run and agree. Figures from this run are not meaningful and nothing here
# asserts a timing; the real numbers come from a full run (bench/README.md).
#
# Once per instruction-set level this CPU has (knnroute_core.available_isas(), forced with KNNROUTE_ISA), so
# an instruction the host lacks fails a benchmark instead of crashing CI: every benchmark at the widest
# level, the kernel benchmarks (single query, batch, precisions, evaluation) at each narrower one. The
# OpenBLAS kernel of the references is read from the CPU by bench/cpu.py (printed below and in each run's meta).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
out=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$py" -c "from bench.cpu import choose_openblas_coretype as c; ch = c(__import__('os').environ.get('OPENBLAS_CORETYPE')); print(f'-- host: {ch.model or \"unknown CPU\"}; OpenBLAS kernel: {ch.coretype or \"(OpenBLAS detects)\"} ({ch.reason})')"
read -r -a levels <<<"$("$py" -c 'import knnroute_core as k; print(" ".join(k.available_isas()))')"
widest=${levels[${#levels[@]}-1]}
kernels=(bench/bench_single.py bench/bench_batch.py bench/bench_memory_precision.py bench/bench_eval.py)
for level in "${levels[@]}"; do
  if [ "$level" = "$widest" ]; then targets=(bench); else targets=("${kernels[@]}"); fi
  echo "-- bench-smoke at KNNROUTE_ISA=$level: ${targets[*]}"
  KNNROUTE_ISA="$level" KNNROUTE_BENCH_QUICK=1 KNNROUTE_BENCH_OUT="$out/$level" \
    "$py" -m pytest "${targets[@]}" -p no:cacheprovider -o testpaths=bench -o python_files='bench_*.py' -q \
    --benchmark-disable-gc --benchmark-columns=median,max,rounds >"$out/$level.log" 2>&1 \
    || { tail -60 "$out/$level.log"; echo "bench-smoke: FAILED at KNNROUTE_ISA=$level"; exit 1; }
  got=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['meta']['isa'])" "$out/$level/latest.json")
  [ "$got" = "$level" ] || { echo "bench-smoke: asked for $level, the run reports $got"; exit 1; }
  tail -1 "$out/$level.log"
done
echo "-- bench-smoke: OK at ${levels[*]} (results in a temp dir, discarded)"
