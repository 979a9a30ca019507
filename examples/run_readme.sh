#!/usr/bin/env bash
# Runs the README's C++ example twice in a row on a bus and socket of its own,
# with shmbusd autospawned by the first run. Both runs must exit 0 and each must
# read the two messages it published (the second finds topic and group there).
#
#   examples/run_readme.sh <path-to-shmbus-readme> <path-to-shmbus> <path-to-shmbusd>
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 <path-to-shmbus-readme> <path-to-shmbus> <path-to-shmbusd>" >&2
  exit 64
fi
README_BIN=$(realpath "$1")
# shellcheck source=examples/private_bus.sh
source "$(dirname "$0")/private_bus.sh"
private_bus readme "$2" "$3"

for run in 1 2; do
  set +e
  out=$(timeout 20 "$README_BIN" "$bus" 2>"$tmp/stderr")
  rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    echo "FAILED: run $run exited $rc" >&2
    echo "  stdout: $out" >&2
    echo "  stderr: $(<"$tmp/stderr")" >&2
    exit 1
  fi
  if ! grep -Eq '^#[0-9]+ hello$' <<<"$out" || ! grep -Eq '^#[0-9]+ in place$' <<<"$out" ||
    [[ $(wc -l <<<"$out") -ne 2 ]]; then
    echo "FAILED: run $run should print its two messages, printed:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "run $run: ok"
  echo "$out"
done
