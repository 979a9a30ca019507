#!/usr/bin/env bash
# The main job: install what is missing, build (Release), run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/examples/shmbus-demo "$@"
