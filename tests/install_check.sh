#!/usr/bin/env bash
# Installs the build tree into a scratch prefix and builds an outside project
# that uses find_package(shmbus) and links shmbus::shmbus, then runs it.
set -euo pipefail
build_dir=$1
source_dir=$2
shift 2  # the rest: flags for the consumer's configure (a sanitizer build's flags)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source_dir/tests/install" -B "$scratch/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" "$@" >/dev/null
cmake --build "$scratch/build" >/dev/null
"$scratch/build/consumer"
