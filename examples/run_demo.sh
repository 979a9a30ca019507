#!/usr/bin/env bash
# Runs the main job's demo (--quick) on a bus and socket of its own, with
# shmbusd autospawned, and checks the shape of what it prints: both labelled
# runs, human units, one summary line per group per run, every message once per
# group, the daemon's pid and how to stop it; then --stop-daemon stops it.
# Asserts no latency or rate figure: only format and the exactly-once checks.
#
#   examples/run_demo.sh <path-to-shmbus-demo> <path-to-shmbus> <path-to-shmbusd>
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 <path-to-shmbus-demo> <path-to-shmbus> <path-to-shmbusd>" >&2
  exit 64
fi
DEMO=$(realpath "$1")
# shellcheck source=examples/private_bus.sh
source "$(dirname "$0")/private_bus.sh"
private_bus demo "$2" "$3"

fail() {
  echo "FAILED: $1" >&2
  echo "--- stdout:" >&2
  cat "$tmp/out" >&2
  echo "--- stderr:" >&2
  cat "$tmp/err" >&2
  exit 1
}

# The number of lines of $tmp/out matching the extended regex $1.
count() { grep -Ec -- "$1" "$tmp/out" || true; }

expect() {  # expect <count> <regex> <what>
  [[ $(count "$2") -eq $1 ]] || fail "expected $1 line(s) with $3 (/$2/), found $(count "$2")"
}

set +e
timeout 10 "$DEMO" --help >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[[ $rc -eq 0 ]] || fail "--help exited $rc"
for opt in --quick --rate --paced --messages --size --bus --stop-daemon; do
  expect 1 "^ +$opt " "--help describing $opt"
done

run() {  # run <args...>: the demo's exit status in $rc, its output in $tmp/out
  set +e
  timeout 120 "$DEMO" --quick --bus "$bus" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
}

run
[[ $rc -eq 0 ]] || fail "the demo exited $rc"
unit='[0-9.]+ (ns|us|ms|s)'
expect 1 '^1\) paced: [0-9]+ messages at [0-9]+ msg/s -- latency' "the paced run's label"
expect 1 '^2\) flat out: [0-9]+ messages .*-- throughput; latency here is time in' \
  "the flat-out run's label"
expect 1 "^   audit +p50 $unit, p99 $unit, max $unit; [0-9]+ of [0-9]+ received, each once\$" \
  "audit's paced summary"
expect 1 "^   workers +p50 $unit, p99 $unit, max $unit; [0-9]+ of [0-9]+ received, each once \\(members [0-9]+ \\+ [0-9]+\\)\$" \
  "workers' paced summary"
expect 1 "^   audit +[0-9.]+ M msg/s, [0-9]+ MB/s \\(queue wait p50 $unit\\); [0-9]+ of [0-9]+ received, each once\$" \
  "audit's flat-out summary"
expect 1 "^   workers +[0-9.]+ M msg/s, [0-9]+ MB/s \\(queue wait p50 $unit\\); [0-9]+ of [0-9]+ received, each once \\(members [0-9]+ \\+ [0-9]+\\)\$" \
  "workers' flat-out summary"
expect 2 '^   audit ' "a summary for audit (one per run)"
expect 2 '^   workers ' "a summary for workers (one per run)"
expect 1 '^check: each group received every message exactly once, in both runs$' "the check"
expect 1 '^shmbusd pid [0-9]+ \(socket .*\) keeps running' "the daemon's pid"
expect 1 "^stop it with: .*shmbus daemon stop --bus $bus --socket $SHMBUS_SOCKET\$" \
  "how to stop the daemon"

# Each group got the whole run.
while read -r got total; do
  [[ $got -eq $total ]] || fail "a group received $got of $total"
done < <(sed -nE 's/.* ([0-9]+) of ([0-9]+) received, each once.*/\1 \2/p' "$tmp/out")

# The workers' members split the run between them: their counts add up to it.
while read -r total a b; do
  [[ $((a + b)) -eq $total ]] || fail "workers' members received $a + $b, not $total"
done < <(sed -nE 's/^   workers .* ([0-9]+) of [0-9]+ received, each once \(members ([0-9]+) \+ ([0-9]+)\)$/\1 \2 \3/p' "$tmp/out")
[[ ! -s "$tmp/err" ]] || fail "the demo wrote to stderr"
echo "run 1: ok"
cat "$tmp/out"

# Again on the same daemon (topics of the first run are gone), then stop it.
pid=$(sed -nE 's/^shmbusd pid ([0-9]+) .*/\1/p' "$tmp/out")
run --stop-daemon
[[ $rc -eq 0 ]] || fail "the second demo (--stop-daemon) exited $rc"
expect 1 "^shmbusd pid $pid \\(socket .*\\) asked to stop \\(--stop-daemon\\)\$" "the stop note"
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || break
  timeout 0.1 tail --pid="$pid" -f /dev/null || true  # bounded wait for it to exit
done
! kill -0 "$pid" 2>/dev/null || fail "shmbusd $pid still runs after --stop-daemon"
echo "run 2 (--stop-daemon): ok"

# A wrong argument is refused with status 2 and a message.
run --rate 0
[[ $rc -eq 2 && -s "$tmp/err" ]] || fail "--rate 0 should exit 2 with a message, exited $rc"
echo "bad argument: ok"
