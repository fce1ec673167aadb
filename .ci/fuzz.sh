#!/usr/bin/env bash
# CI hardening: run the atheris fuzz targets for a bounded time each and fail on any finding.
#   fuzz/fuzz_loader.py  router files (raw bytes, re-signed structured header edits, truncations)
#   fuzz/fuzz_core.py    knnroute_core entry points (sizes, settings, NaN/inf bit patterns, updates)
#   fuzz/fuzz_service.py the HTTP request edge: raw bodies, structured bodies through the app, image paths
#   fuzz/fuzz_load.py    router files truncated / rewritten in place / deleted while they load and reload
#   fuzz/fuzz_gateway.py the gateway's chat and feedback bodies through the real app and a loopback upstream
# FUZZ_SECONDS (default 60) per target for loader and core, FUZZ_SECONDS_SERVICE (default 30) for service,
# load and gateway. Crash inputs are kept in $FUZZ_ARTIFACTS (default a temp dir).
# The core target also runs under ASan/UBSan in .ci/sanitize.sh (SANITIZE_FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
secs=${FUZZ_SECONDS:-60}
art=${FUZZ_ARTIFACTS:-$(mktemp -d "${TMPDIR:-/tmp}/knnroute-fuzz.XXXXXX")}
mkdir -p "$art"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
status=0
for target in loader core service load gateway; do
  corpus="$art/corpus-$target"
  mkdir -p "$corpus"
  t=$secs
  case $target in service|load|gateway) t=${FUZZ_SECONDS_SERVICE:-30} ;; esac
  echo "-- fuzz_$target for ${t}s"
  if ! "$py" "fuzz/fuzz_$target.py" -max_total_time="$t" -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="$art/$target-" -print_final_stats=1 "$corpus" >"$art/$target.log" 2>&1; then
    status=1
    echo "fuzz_$target: FINDING (inputs in $art):"
    tail -40 "$art/$target.log"
  fi
  runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$art/$target.log" | tail -1 || true)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$art/$target.log" | tail -1 || true)
  echo "fuzz_$target: ${runs:-no summary} (${cov})"
done
exit $status
