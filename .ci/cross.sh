#!/usr/bin/env bash
# CI: the core on every architecture and compiler we ship for, without ARM hardware.
#  1. x86-64, g++ and clang: the C++ test executable (cpp/tests/test_core.cpp) runs every kernel at every
#     ISA level this CPU has (scalar, avx2, avx2-vnni, avx512, avx512-vnni) against the scalar reference.
#  2. aarch64, cross-compiled with Debian's g++-aarch64-linux-gnu (cmake/aarch64-linux-gnu.cmake): the
#     same executable under qemu-user, once as a CPU with dotprod (-cpu max: scalar, neon, neon-dotprod)
#     and once without (-cpu cortex-a53: scalar, neon).
#  3. aarch64 with clang (--target=aarch64-linux-gnu): every file under cpp/ except the bindings compiles.
# Installs its tools with apt-get when missing (Debian: g++-aarch64-linux-gnu qemu-user clang).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${KNNROUTE_CROSS_JOBS:-2}
out=$(mktemp -d "${TMPDIR:-/tmp}/knnroute-cross.XXXXXX")
trap 'rm -rf "$out"' EXIT

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v clang++ >/dev/null || need+=(clang)
command -v ninja >/dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
  echo "-- cross: apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

build() {  # build <dir> <extra cmake args...>
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKNNROUTE_BUILD_PYTHON=OFF -DKNNROUTE_BUILD_TESTS=ON \
    "$@" >"$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
  # -Werror: a warning on one compiler or architecture is a failure here.
  nice cmake --build "$dir" -j "$jobs" -- >>"$dir.log" 2>&1 || { tail -60 "$dir.log"; exit 1; }
  if grep -q "warning:" "$dir.log"; then grep -A3 "warning:" "$dir.log"; echo "cross: warnings in $dir"; exit 1; fi
}

run() {  # run <label> <command...>
  local label=$1
  shift
  local log="$out/run.log"
  if "$@" >"$log" 2>&1; then
    echo "-- $label: $(tail -2 "$log" | tr '\n' ' ')"
  else
    grep FAIL "$log" | head -40
    tail -2 "$log"
    echo "cross: FAILED $label"
    exit 1
  fi
}

echo "-- x86-64 g++"
build "$out/x86-gcc" -DCMAKE_CXX_COMPILER=g++
run "x86-64 g++" "$out/x86-gcc/knnroute_core_tests"
echo "-- x86-64 clang"
build "$out/x86-clang" -DCMAKE_CXX_COMPILER=clang++
run "x86-64 clang" "$out/x86-clang/knnroute_core_tests"
echo "-- aarch64 g++ (cross)"
build "$out/aarch64" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake"
run "aarch64 qemu -cpu max (dotprod)" qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max "$out/aarch64/knnroute_core_tests"
run "aarch64 qemu -cpu cortex-a53 (no dotprod)" qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53 \
  "$out/aarch64/knnroute_core_tests"
echo "-- aarch64 clang (compile only)"
for f in cpp/src/*.cpp cpp/src/simd/*.cpp cpp/tests/test_core.cpp; do
  extra=()
  case $f in *_dotprod.cpp) extra=(-march=armv8.2-a+dotprod) ;; esac
  clang++ --target=aarch64-linux-gnu -std=c++17 -O2 -Wall -Wextra -Werror -Icpp/include "${extra[@]}" \
    -c "$f" -o "$out/clang-arm.o"
done
echo "-- cross: OK"
