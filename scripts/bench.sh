#!/usr/bin/env bash
# The comparison benchmark (issue 4): installs the comparators from Debian's
# packages if they are missing, builds the release preset, and runs
# shmbus-compare, which prints the Markdown tables and writes
# bench/results/compare.md, compare.json and compare.png.
#
#   scripts/bench.sh                 the default run (a few minutes on 2 cores)
#   scripts/bench.sh --quick         a short smoke run
#   scripts/bench.sh --no-install    do not touch packages
#   any other argument goes to shmbus-compare (see build/release/bench/shmbus-compare --help)
#
# Every wait inside shmbus-compare has a timeout; the whole run is also capped
# here (SHMBUS_BENCH_TIMEOUT seconds, default 600; a default run takes about 3
# minutes on the 2-core machine), and iox-roudi, which the benchmark starts
# itself, is always stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
args=()
for a in "$@"; do
  case "$a" in
    --no-install) install=0 ;;
    *) args+=("$a") ;;
  esac
done

packages=(build-essential cmake ninja-build pkg-config
          libboost-dev libconcurrentqueue-dev libzmq3-dev
          iceoryx libiceoryx-posh-dev libiceoryx-hoofs-dev libiceoryx-posh-roudi2
          python3-matplotlib)

if [ "$install" -eq 1 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "bench: installing ${missing[*]}" >&2
    # A failed install (no network, no root) is not fatal: the comparators
    # whose packages are missing are skipped by CMake and the run says so.
    if ! { "${sudo_cmd[@]}" apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
             --no-install-recommends "${missing[@]}"; }; then
      echo "bench: apt-get failed; comparators without their package will be skipped" >&2
    fi
  fi
fi

cmake --preset release >/dev/null
cmake --build --preset release --target shmbus-compare

mkdir -p bench/results
bin=build/release/bench/shmbus-compare
timeout_s=${SHMBUS_BENCH_TIMEOUT:-600}
status=0
# shmbus-compare prints the Markdown and writes bench/results/compare.md,
# compare.json and (through bench/plot.py, with /usr/bin/python3) compare.png.
# timeout sends SIGTERM, on which the benchmark kills its children and stops
# the iox-roudi it started; --kill-after ends it 10 s later if that hangs.
timeout --kill-after=10 "$timeout_s" "$bin" --out-dir bench/results ${args[@]+"${args[@]}"} || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "bench: shmbus-compare did not finish within ${timeout_s} s" >&2
fi

# Belt and braces: the iox-roudi this run started (its pid file) never outlives it.
pidfile=bench/results/.roudi.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "iox-roudi" ]; then
    echo "bench: stopping iox-roudi (pid $pid) left behind" >&2
    kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi
exit "$status"
