#!/usr/bin/env bash
# Every test: install what is missing, then build and run the suites under
# ThreadSanitizer, AddressSanitizer+UBSan, and finally the Release build
# (which also checks `cmake --install` + find_package), then the Python module's
# pytest suite (tests/python). Ends with pytest's summary.
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

echo "== fuzz: the control protocol's decoders and frame splitter under libFuzzer (clang, ASan+UBSan), 30 s"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
corpus=$(mktemp -d)
cp tests/fuzz/corpus/* "$corpus"/
build/fuzz/tests/fuzz/fuzz_request -max_total_time=30 -print_final_stats=0 "$corpus" 2>&1 | tail -n 2
rm -rf "$corpus"

echo "== release build and tests"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j 1

echo "== python: the shmbus module (bindings/python) under pytest"
PYTHONPATH="$PWD/build/release/bindings/python${PYTHONPATH:+:$PYTHONPATH}" \
  SHMBUS_BUILD_DIR="$PWD/build/release" /usr/bin/python3 -m pytest tests/python -q
