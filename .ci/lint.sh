#!/usr/bin/env bash
# CI: static checks, all configured in pyproject.toml and pinned in the `dev` extra.
#   ruff      lint rules E, F, W, I, B, UP, NPY, PT over python/, tests/, bench/, experiments/, fuzz/
#   mypy      the knnroute package (check_untyped_defs)
#   stubtest  the committed knnroute_core stubs against the installed compiled module, and their
#             freshness against pybind11-stubgen (.ci/stubtest.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
echo "-- ruff"
"$py" -m ruff check --no-cache python tests bench experiments fuzz
echo "-- mypy"
"$py" -m mypy --no-incremental
bash .ci/stubtest.sh
echo "-- lint: OK"
