#!/usr/bin/env bash
# CI hardening: build a separate AddressSanitizer + UndefinedBehaviorSanitizer copy of the core
# extension in a temporary folder (never over the installed package) and run the core tests, plus the
# persistence / live-update / concurrency tests that drive the core's add/remove/add_model paths from
# many threads, against it. Any ASan report or UBSan finding fails the step.
#
#   bash .ci/sanitize.sh            # env: SANITIZE_TESTS to override the test list, KEEP=1 to keep the build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-sanitize.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
tests=${SANITIZE_TESTS:-"tests/test_core.py tests/test_precision.py tests/test_persist.py tests/test_production.py"}

echo "-- configure + build (address,undefined) in $work"
cmake -S "$root" -B "$work/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKNNROUTE_SANITIZE=address,undefined \
  -DPython_EXECUTABLE="$(command -v "$py")" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" --target _core -j"$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -50 "$work/build.log"; exit 1; }

mkdir -p "$work/pkg/knnroute_core"
cp python/knnroute_core/__init__.py "$work/pkg/knnroute_core/"
cp python/knnroute_core/*.pyi python/knnroute_core/py.typed "$work/pkg/knnroute_core/" 2>/dev/null || true
cp "$work"/build/_core*.so "$work/pkg/knnroute_core/"
# Not `ldd | grep -q`: under pipefail, grep -q exiting at its first match can kill ldd with SIGPIPE
# and fail the pipeline on an instrumented build (seen once in CI).
ldd_out=$(ldd "$work"/pkg/knnroute_core/_core*.so)
grep -q libasan <<<"$ldd_out" || { echo "sanitize: build is not instrumented"; exit 1; }

# An editable install redirects imports through a meta-path finder that wins over PYTHONPATH; drop
# it so the sanitized copy (first on PYTHONPATH) and this checkout's Python sources are what run.
cat >"$work/run.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (type(f).__module__ or "")
                    and "ScikitBuild" not in type(f).__name__]
import knnroute_core, knnroute_core._core as c
want = sys.argv[1]
if not c.__file__.startswith(want):
    sys.exit(f"sanitize: imported {c.__file__}, not the sanitized build under {want}")
print(f"sanitize: using {c.__file__} (isa={knnroute_core.isa()})", flush=True)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
PY

asan_rt=$(gcc -print-file-name=libasan.so)
ubsan_rt=$(gcc -print-file-name=libubsan.so)
echo "-- tests under ASan/UBSan: $tests"
# detect_leaks=0: CPython's own allocations look like leaks at exit. halt_on_error: UB fails the run.
# --capture=sys: pytest must not capture fd 2, or an ASan report vanishes and only "Aborted" is left.
# -k "not hnsw": hnswlib's own binding frees a new[] buffer with delete (alloc-dealloc-mismatch in its
# bindings.cpp knnQuery_return_numpy, found here); that is third-party code, not ours.
env LD_PRELOAD="$asan_rt $ubsan_rt" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1" \
  UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1" \
  PYTHONPATH="$work/pkg:$root/python:$root" \
  PYTHONMALLOC=malloc \
  "$py" "$work/run.py" "$work/pkg" -q -p no:cacheprovider -x --capture=sys -k "not hnsw" $tests
fz=${SANITIZE_FUZZ_SECONDS:-30}
if [ "$fz" -gt 0 ] && "$py" -c "import atheris" 2>/dev/null; then
  echo "-- fuzz_core for ${fz}s under ASan/UBSan"
  cat >"$work/fuzz.py" <<'PY'
import sys, runpy
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (type(f).__module__ or "")
                    and "ScikitBuild" not in type(f).__name__]
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
  mkdir -p "$work/corpus"
  env LD_PRELOAD="$asan_rt $ubsan_rt" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1" \
    PYTHONPATH="$work/pkg:$root/python:$root" PYTHONMALLOC=malloc \
    "$py" "$work/fuzz.py" "$root/fuzz/fuzz_core.py" -max_total_time="$fz" -rss_limit_mb=8192 \
      -artifact_prefix="$work/" "$work/corpus" >"$work/fuzz.log" 2>&1 || { tail -60 "$work/fuzz.log"; exit 1; }
  grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$work/fuzz.log" | tail -1
fi
echo "-- sanitize: OK"
