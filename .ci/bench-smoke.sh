#!/usr/bin/env bash
# CI: run every benchmark once in quick mode (tiny sizes, a few rounds) as a smoke test: the benchmark
# code paths and their references still run and agree. Figures from this run are not meaningful and
# nothing here asserts a timing; the real numbers come from a full run (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT
KNNROUTE_BENCH_QUICK=1 KNNROUTE_BENCH_OUT="$out" python -m pytest bench -p no:cacheprovider \
  -o testpaths=bench -o python_files='bench_*.py' -q --benchmark-disable-gc \
  --benchmark-columns=median,max,rounds
echo "-- bench-smoke: OK (results in a temp dir, discarded)"
