#!/usr/bin/env bash
# The main job: install what is missing, build (Release, all cores), run the demo.
# A second run installs nothing (deps.sh checks dpkg first) and rebuilds nothing
# unless a source changed (ninja's own up-to-date check). Arguments go to the
# demo (try --help, or --quick for a short run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# Configure once; afterwards ninja re-runs cmake itself when a CMakeLists.txt changes.
[[ -f build/release/build.ninja ]] || cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
exec build/release/examples/shmbus-demo "$@"
