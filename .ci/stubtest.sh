#!/usr/bin/env bash
# Checks the knnroute_core type stubs (python/knnroute_core/*.pyi, shipped in the wheel with py.typed)
# against the compiled module that Python imports: the installed package in CI, or a dev build with
# PYTHONPATH=$PWD/python. Fails on any stubtest error not in .ci/stubtest-allowlist.txt (each entry
# says why), and, when pybind11-stubgen is installed, on stubs that differ from a fresh .ci/stubgen.sh
# run (regenerate and commit them).
#
#   bash .ci/stubtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python}
# Run from outside the checkout: the module under test is the one on sys.path (site-packages or PYTHONPATH).
where=$(cd / && "$py" -c "import knnroute_core._core as c; print(c.__file__)")
echo "-- stubtest knnroute_core ($where)"
(cd / && "$py" -m mypy.stubtest knnroute_core --allowlist "$root/.ci/stubtest-allowlist.txt")
if "$py" -c "import pybind11_stubgen" 2>/dev/null; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-stubtest.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  OUT="$tmp" bash .ci/stubgen.sh >/dev/null
  for f in __init__ _core; do
    diff -u "python/knnroute_core/$f.pyi" "$tmp/knnroute_core/$f.pyi" \
      || { echo "stubtest: python/knnroute_core/$f.pyi is stale: run .ci/stubgen.sh and commit"; exit 1; }
  done
  echo "-- stubs match a fresh pybind11-stubgen run"
else
  echo "-- pybind11-stubgen not installed: freshness check skipped"
fi
echo "-- stubtest: OK"
