#!/usr/bin/env bash
# Run .ci/run as CI does: a clean clone of this checkout's HEAD (committed work only), ../shared beside it,
# in a NEW virtual environment, so a package that was installed by hand cannot hide a missing install step.
#   bash .ci/fresh.sh            # KEEP=1 keeps the temp folder (clone, venv, log) for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared=$(cd "$root/.." && pwd)/shared
[ -d "$shared" ] || { echo "fresh: $shared not found (CI lays ../shared beside the clone)"; exit 1; }
d=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-fresh.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$d"' EXIT; fi
python3 -m venv "$d/v"
git clone -q "$root" "$d/k"
ln -s "$shared" "$d/shared"
echo "-- fresh: clone of $(git rev-parse --short HEAD) in $d/k, venv $d/v"
start=$(date +%s)
set +e
( . "$d/v/bin/activate" && cd "$d/k" && CI=true bash .ci/run ) 2>&1 | tee "$d/ci.log"
rc=${PIPESTATUS[0]}
set -e
echo "-- fresh: .ci/run exited $rc after $(( $(date +%s) - start )) s (log: $d/ci.log)"
exit "$rc"
