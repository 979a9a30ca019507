#!/usr/bin/env bash
# Installs the build tree into a scratch prefix and builds an outside program
# against it, then runs it:
#   install_check.sh cmake BUILD SOURCE [configure flags...]
#       a CMake project: find_package(shmbus), links shmbus::shmbus
#   install_check.sh pkg-config BUILD SOURCE CXX [CXXFLAGS [LDFLAGS]]
#       one compiler line: CXX consumer.cpp $(pkg-config --cflags --libs shmbus)
# The flags are a sanitizer build's, so that the consumer links its runtime.
set -euo pipefail
mode=$1
build_dir=$2
source_dir=$3
shift 3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
case "$mode" in
  cmake)
    cmake -S "$source_dir/tests/install" -B "$scratch/build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$scratch/prefix" "$@" >/dev/null
    cmake --build "$scratch/build" >/dev/null
    "$scratch/build/consumer" find_package
    ;;
  pkg-config)
    cxx=$1
    cxxflags=${2:-}
    ldflags=${3:-}
    pc=$(find "$scratch/prefix" -name shmbus.pc -print -quit)
    if [[ -z $pc ]]; then
      echo "install_check: no shmbus.pc installed under $scratch/prefix" >&2
      exit 1
    fi
    export PKG_CONFIG_PATH=$(dirname "$pc")
    pkg-config --exists --print-errors shmbus
    # shellcheck disable=SC2046,SC2086  # word splitting of the flags is wanted
    "$cxx" $cxxflags "$source_dir/tests/install/consumer.cpp" -o "$scratch/consumer" \
      $(pkg-config --cflags --libs shmbus) $ldflags
    "$scratch/consumer" pkg-config
    ;;
  *)
    echo "usage: install_check.sh cmake|pkg-config BUILD SOURCE ..." >&2
    exit 2
    ;;
esac
