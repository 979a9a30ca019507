#!/usr/bin/env bash
# Before/after figures of a change, as interleaved pairs in one run: the
# 64 B busy-spin one-way p50 against the bare cache line (the ratio preset),
# and the 64 B throughput of publish()/receive() against the bare SPSC ring
# of the same size (the limits preset's throughput section). Each round runs
# the old build, then the new one, so that a drift of the host shows in both.
#
#   bench/before_after.sh OLD_BENCH_DIR NEW_BENCH_DIR [ROUNDS]
#
# A *_BENCH_DIR holds shmbus-ipc-bench (any version) and, for builds after
# the harness split, shmbus-compare. Build the old one from its commit, e.g.
#   git worktree add /tmp/old 026f89b && cmake -S /tmp/old -B /tmp/old/b -G Ninja \
#     && cmake --build /tmp/old/b --target shmbus-ipc-bench
# Run it on an otherwise idle machine: two spinning processes own both cores.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
old=$1
new=$2
rounds=${3:-5}
for d in "$old" "$new"; do
  [[ -x $d/shmbus-ipc-bench ]] || { echo "no shmbus-ipc-bench in $d" >&2; exit 2; }
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The one number a report line gives: "median 1.26x" -> 1.26.
ratio_of() { grep -o 'p50 of 64 B: median [0-9.]*x' "$1" | grep -o '[0-9.]*x' | tr -d x; }
# The median Mmsg/s of the first table row that starts with the system's name.
rate_of() { grep -F "| $2 |" "$1" | head -1 | awk -F'|' '{print $4}' | grep -o '[0-9.]*' | head -1; }

run() {  # run WHICH DIR ROUND
  local which=$1 dir=$2 r=$3
  # shmbus-ipc-bench takes --sections ratio in every version; --out-dir and
  # --json keep the results out of the tree.
  "$dir/shmbus-ipc-bench" --sections ratio --pairs 15 --sizes 64 \
    --json "$scratch/$which-ratio-$r.json" >"$scratch/$which-ratio-$r.md" 2>/dev/null
  "$dir/shmbus-ipc-bench" --sections throughput --sizes 64 --repeat 3 \
    --json "$scratch/$which-tp-$r.json" >"$scratch/$which-tp-$r.md" 2>/dev/null
}

printf '| round | build | shmbus/bare line p50 | shmbus 1P Mmsg/s | shmbus MP Mmsg/s | bare ring (per 16) Mmsg/s | 1P/bare ring |\n'
printf '|---:|---|---:|---:|---:|---:|---:|\n'
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    dir=$old
    [[ $which == new ]] && dir=$new
    run "$which" "$dir" "$r"
    md=$scratch/$which-tp-$r.md
    bare=$(grep -F '| *bare SPSC ring' "$md" | grep -F 'every 16' | head -1 | awk -F'|' '{print $4}' |
      grep -o '[0-9.]*' | head -1)
    one=$(rate_of "$md" 'shmbus publish() copy, busy-spin, single_producer topic, receive()')
    # The throughput ratio within one run: the host's state (the rate here is
    # bimodal, ~5 or ~21 M msg/s, for both rings alike) cancels out.
    rel=$(awk -v a="${one:-0}" -v b="${bare:-0}" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "?"}')
    printf '| %s | %s | %sx | %s | %s | %s | %s |\n' "$r" "$which" \
      "$(ratio_of "$scratch/$which-ratio-$r.md")" "$one" \
      "$(rate_of "$md" 'shmbus publish() copy, busy-spin, multi-producer topic, receive()')" \
      "${bare:-?}" "$rel" | tee -a "$scratch/rows"
  done
done

# Medians per build, and new/old.
med() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "?"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { grep "| $1 |" "$scratch/rows" | awk -F'|' -v c="$2" '{gsub(/[ x]/,"",$c); print $c}' | med; }
echo
printf '| build | shmbus/bare line p50 | 1P Mmsg/s | MP Mmsg/s | bare ring Mmsg/s | 1P/bare ring |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for which in old new; do
  printf '| %s | %sx | %s | %s | %s | %s |\n' "$which" "$(col "$which" 4)" "$(col "$which" 5)" \
    "$(col "$which" 6)" "$(col "$which" 7)" "$(col "$which" 8)"
done
echo "(medians over $rounds rounds)"
