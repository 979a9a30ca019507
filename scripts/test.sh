#!/usr/bin/env bash
# Every test: install what is missing, then build and run the suites under
# ThreadSanitizer, AddressSanitizer+UBSan, and finally the Release build
# (which also checks `cmake --install` + find_package). Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

for preset in tsan asan; do
  echo "== $preset build and tests"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j 1
done

echo "== release build and tests"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j 1
