#!/usr/bin/env bash
# End-to-end test of the `shmbus` command line against a real shmbusd, started
# by autospawn on a private socket and a bus name of its own.
#
#   tests/cli_e2e.sh <path-to-shmbus> <path-to-shmbusd>
#
# Every wait is bounded (`timeout 20` around each command, or a polled
# condition with a 20 s limit). Prints "cli e2e: N passed, 0 failed" on
# success; on the first failed check says what was expected and what came,
# and exits 1.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <path-to-shmbus> <path-to-shmbusd>" >&2
  exit 64
fi
SHMBUS=$(realpath "$1")
SHMBUSD=$(realpath "$2")
[[ -x $SHMBUS && -x $SHMBUSD ]] || { echo "not executable: $SHMBUS or $SHMBUSD" >&2; exit 1; }

tmp=$(mktemp -d /tmp/shmbus-cli-e2e.XXXXXX)
bus="e2e$$"
sock="$tmp/bus.sock"
daemon_pid=""
# File topics in the test's directory (the autospawned daemon inherits it).
export SHMBUS_DATA_DIR="$tmp/data"
passed=0

cleanup() {
  local rc=$?
  trap - EXIT
  # Background subscribers this script started (by pid).
  local p
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  timeout 10 "$SHMBUS" daemon stop --bus "$bus" --socket "$sock" >/dev/null 2>&1 || true
  # The daemon this test spawned, should it not have stopped.
  if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  rm -f /dev/shm/shmbus."$bus".*
  exit "$rc"
}
trap cleanup EXIT

# ---- helpers ------------------------------------------------------------------

# shmbus with this test's bus, socket and daemon binary; never waits over 20 s.
cli() {
  timeout 20 "$SHMBUS" "$@" --bus "$bus" --socket "$sock" --daemon "$SHMBUSD"
}

# run CMD...: runs it, keeping its stdout in $out, stderr in $err, status in $rc.
run() {
  set +e
  out=$("$@" 2>"$tmp/stderr")
  rc=$?
  set -e
  err=$(<"$tmp/stderr")
}

fail() {  # WHAT EXPECTED GOT
  echo "FAILED: $1" >&2
  echo "  expected: $2" >&2
  echo "  got:      $3" >&2
  [[ -z ${out-} ]] || echo "  stdout:   $out" >&2
  [[ -z ${err-} ]] || echo "  stderr:   $err" >&2
  # The autospawned daemon's log (beside its socket), for a failure that
  # depends on what the daemon went through (a restart, a sanitizer report).
  if [[ -f $sock.log ]]; then
    echo "  daemon log ($sock.log, last 40 lines):" >&2
    tail -n 40 "$sock.log" | sed 's/^/    /' >&2
  fi
  echo "cli e2e: $passed passed, 1 failed"
  exit 1
}
pass() { passed=$((passed + 1)); }

expect_rc() {  # CODE WHAT
  [[ $rc -eq $1 ]] || fail "$2 (exit code)" "$1" "$rc"
  pass
}
expect_out() {  # TEXT WHAT: stdout is exactly TEXT
  [[ $out == "$1" ]] || fail "$2 (stdout)" "$(printf '%q' "$1")" "$(printf '%q' "$out")"
  pass
}
expect_match() {  # REGEX TEXT WHAT: some line of TEXT matches the extended REGEX
  grep -Eq -- "$1" <<<"$2" || fail "$3" "a line matching /$1/" "$(printf '%q' "$2")"
  pass
}
expect_no_match() {  # REGEX TEXT WHAT
  ! grep -Eq -- "$1" <<<"$2" || fail "$3" "no line matching /$1/" "$(printf '%q' "$2")"
  pass
}
expect_one_error_line() {  # WHAT: stderr is one line "shmbus: <message>"
  [[ $err =~ ^shmbus:\ [^$'\n']+$ ]] || fail "$1 (stderr)" "one line 'shmbus: ...'" \
    "$(printf '%q' "$err")"
  pass
}

# on_tty CMD...: runs CMD with stdout and stderr on a terminal (script(1)'s pty),
# keeping what it wrote in $out and its status in $rc.
on_tty() {
  local cmd
  printf -v cmd '%q ' "$@"
  run timeout 20 script -qec "$cmd" /dev/null
}

# wait_until WHAT CMD...: polls CMD (every 50 ms) until it succeeds, at most 20 s.
wait_until() {
  local what=$1
  shift
  local deadline=$((SECONDS + 20))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what" "within 20 s" "still not after 20 s"
    sleep 0.05
  done
}

# ---- usage ----------------------------------------------------------------------

run timeout 20 "$SHMBUS" --version
expect_rc 0 "--version"
expect_match '^shmbus [0-9]+\.[0-9]+\.[0-9]+$' "$out" "--version prints the version"

run timeout 20 "$SHMBUS" --help
expect_rc 0 "--help"
expect_match 'Exit codes' "$out" "--help documents the exit codes"
expect_match '^ +--socket' "$out" "--help lists the global options"
[[ $(grep -c -- '--socket' <<<"$out") -eq 1 ]] ||
  fail "--help lists --socket once" "1 line" "$(grep -c -- '--socket' <<<"$out")"
pass

# No arguments: the command list on stderr, like git, and a usage error.
run timeout 20 "$SHMBUS"
expect_rc 64 "shmbus with no arguments is a usage error"
expect_out '' "shmbus with no arguments prints nothing on stdout"
expect_match '^usage: shmbus ' "$err" "shmbus with no arguments prints a usage line"
expect_match '^  topic create +[a-z]' "$err" "the command list names topic create with its help"
expect_match '^  stat +[a-z]' "$err" "the command list names stat with its help"
expect_match '^  daemon stop +[a-z]' "$err" "the command list names daemon stop with its help"

# A subcommand's help: its own options, and the global ones only by reference.
run timeout 20 "$SHMBUS" topic create --help
expect_rc 0 "topic create --help"
expect_match '--slot-size' "$out" "topic create --help lists --slot-size"
expect_no_match '--socket|--no-autospawn|Exit codes' "$out" \
  "topic create --help leaves the global options and exit codes to shmbus --help"
expect_match '^global options: see shmbus --help$' "$out" "topic create --help points to shmbus --help"
run timeout 20 "$SHMBUS" sub --help
expect_rc 0 "sub --help"
expect_match '^ +--from' "$out" "sub --help lists --from"
expect_no_match '--socket|--no-autospawn|Exit codes' "$out" \
  "sub --help leaves the global options and exit codes to shmbus --help"

# The parser's own errors are one line and a usage error; the pointer to --help
# only on a terminal.
run cli topic create x --bogus
expect_rc 64 "an unknown option is a usage error"
expect_one_error_line "an unknown option"
expect_match 'bogus' "$err" "an unknown option is named"
run cli sub x --count
expect_rc 64 "an option without its argument is a usage error"
expect_one_error_line "an option without its argument"
run cli sub x --count many
expect_rc 64 "a bad value is a usage error"
expect_one_error_line "a bad value"
on_tty "$SHMBUS" sub x --bogus
expect_rc 64 "an unknown option on a terminal is a usage error"
expect_match 'Run with --help' "$out" "on a terminal a parse error points to --help"

run cli topic create
expect_rc 64 "topic create without a name is a usage error"

run cli sub x --from sometime
expect_rc 64 "sub --from with a bad value is a usage error"
expect_one_error_line "sub --from with a bad value"

run cli pub x --lines
expect_rc 64 "pub --lines without --file is a usage error"

# ---- no daemon yet: status must not start one ------------------------------------

run cli daemon status
expect_rc 1 "daemon status with no daemon"
expect_match 'no shmbusd answers' "$err" "daemon status says no daemon answers"
[[ ! -e $sock ]] || fail "daemon status must not autospawn" "no socket at $sock" "a socket"
pass

run cli topic list --no-autospawn
expect_rc 5 "topic list --no-autospawn with no daemon (daemon unavailable)"

# ---- topics ---------------------------------------------------------------------

run cli topic create orders --slots 8 --slot-size 64
expect_rc 0 "topic create orders (autospawns the daemon)"
expect_match "^created topic 'orders' on bus '$bus': 8 slots x 64 bytes, policy block" "$out" \
  "topic create prints what it created"

run cli daemon status
expect_rc 0 "daemon status after autospawn"
daemon_pid=$(sed -nE 's/^pid: +([0-9]+)$/\1/p' <<<"$out")
[[ $daemon_pid =~ ^[0-9]+$ ]] || fail "daemon status prints the pid" "pid: N" "$out"
pass

run cli topic create orders
expect_rc 6 "topic create of an existing topic"
expect_match "already exists" "$err" "topic create says the topic exists"

run cli topic create orders --if-not-exists
expect_rc 0 "topic create --if-not-exists of an existing topic"

run cli topic create bad/name
expect_rc 64 "topic create with an invalid name (a usage error)"
expect_match "contains '/'" "$err" "the invalid name is explained"

run cli topic list
expect_rc 0 "topic list"
expect_match '^NAME +SLOTS +SLOT_SIZE +POLICY +TAIL +PRODUCERS +GROUPS$' "$out" "topic list header"
expect_match '^orders +8 +64 +block +0 +0 +0$' "$out" "topic list shows orders"

run cli topic list --json
expect_rc 0 "topic list --json"
expect_match '^\[\{"name":"orders","slots":8,"slot_size":64,"policy":"block"' "$out" \
  "topic list --json"

# ---- pub and sub ------------------------------------------------------------------

run cli pub orders <<<$'one\ntwo\nthree\nfour\nfive'
expect_rc 0 "pub of five lines"
expect_match "^shmbus: published 5 messages \(19 bytes\) to 'orders'$" "$err" "pub reports the count"

run cli sub orders --from earliest --count 5
expect_rc 0 "sub --from earliest --count 5"
expect_out $'one\ntwo\nthree\nfour\nfive' "sub prints each message as a line"

run cli sub orders --from 1 --count 2 --show-offset
expect_rc 0 "sub --from 1 --show-offset"
expect_out $'1: two\n2: three' "sub --show-offset prefixes the offset"

run cli sub orders --from earliest --count 1 --hex
expect_rc 0 "sub --hex"
expect_out '6f6e65' "sub --hex prints hex bytes"

# A named group keeps its position: a second member goes on where the first stopped.
run cli sub orders --group g --from earliest --count 2
expect_rc 0 "sub --group g (first member)"
expect_out $'one\ntwo' "group g takes the first two"
run cli sub orders --group g --count 2
expect_rc 0 "sub --group g (next member)"
expect_out $'three\nfour' "group g goes on from its position"

run cli topic describe orders
expect_rc 0 "topic describe orders"
expect_match '^tail: +5$' "$out" "describe shows the tail"
expect_match '^slot size: +64 bytes$' "$out" "describe shows the slot size"
expect_match '^policy: +block$' "$out" "describe shows the policy"
expect_match '^ +GROUP +MEMBERS +DURABLE +POSITION +LAG +LOST +MODE$' "$out" "describe group header"
expect_match '^ +g +0 +no +4 +1 +0 +shared$' "$out" "describe shows group g at position 4, lag 1"

run cli topic describe orders --json
expect_rc 0 "topic describe --json"
expect_match '"tail":5' "$out" "describe --json tail"
expect_match '\{"name":"g","private":false,"members":0,"durable":false,"position":4,"lag":1,"lost":0,"overrun":0,"filtered":0,"mode":"shared","delivery":"at_most_once","per_partition":\[\{"partition":0,"position":4,"lag":1\}\]\}' \
  "$out" "describe --json group g"

# --file: whole file as one message, or line by line; --repeat.
printf 'alpha\nbeta\n' >"$tmp/two-lines"
run cli topic create files --slot-size 64
expect_rc 0 "topic create files"
run cli pub files --file "$tmp/two-lines"
expect_rc 0 "pub --file"
run cli pub files --file "$tmp/two-lines" --lines --repeat 2
expect_rc 0 "pub --file --lines --repeat 2"
expect_match 'published 4 messages' "$err" "pub --repeat 2 sends the input twice"
run cli sub files --from earliest --count 5 --hex
expect_rc 0 "sub of files"
expect_out $'616c7068610a626574610a\n616c706861\n62657461\n616c706861\n62657461' \
  "pub --file sends the whole file; --lines each line"

run cli pub missing <<<"x"
expect_rc 3 "pub to a topic that does not exist"

# Members of one group compete: 20 messages, two members of 10 each, every
# message exactly once across them.
run cli topic create work
expect_rc 0 "topic create work"
run cli pub work < <(seq 1 20)
expect_rc 0 "pub of 20 messages"
cli sub work --group workers --from earliest --count 10 -q >"$tmp/w1" 2>"$tmp/w1.err" &
w1=$!
cli sub work --group workers --from earliest --count 10 -q >"$tmp/w2" 2>"$tmp/w2.err" &
w2=$!
rc=0
wait "$w1" || rc=$?
expect_rc 0 "first member of workers"
rc=0
wait "$w2" || rc=$?
expect_rc 0 "second member of workers"
[[ $(wc -l <"$tmp/w1") -eq 10 && $(wc -l <"$tmp/w2") -eq 10 ]] ||
  fail "each member takes 10" "10 and 10 lines" "$(wc -l <"$tmp/w1") and $(wc -l <"$tmp/w2")"
pass
out=$(sort -n "$tmp/w1" "$tmp/w2")
expect_out "$(seq 1 20)" "the group's members together took every message exactly once"

# sub flushes per message: a live subscriber's first line shows while it still waits.
run cli topic create live
expect_rc 0 "topic create live"
cli sub live --count 2 >"$tmp/live" 2>"$tmp/live.err" &
live=$!
private_member() { cli topic describe live --json 2>/dev/null | grep -q '"private":true,"members":1'; }
wait_until "the live subscriber joins" private_member
run cli pub live <<<"first"
expect_rc 0 "pub first"
first_shown() { grep -qx first "$tmp/live"; }
wait_until "sub prints 'first' while it waits for more" first_shown
kill -0 "$live" 2>/dev/null || fail "sub still runs after one of --count 2" "running" "exited"
pass
run cli pub live <<<"second"
expect_rc 0 "pub second"
rc=0
wait "$live" || rc=$?
expect_rc 0 "live sub exits after --count 2"
out=$(<"$tmp/live")
expect_out $'first\nsecond' "live sub output"

# ---- failures -------------------------------------------------------------------

run cli pub orders < <(head -c 100 /dev/zero | tr '\0' x)
expect_rc 1 "pub of a message over the slot size"
expect_match '100 bytes, larger than the 64-byte slot size' "$err" "the error names both sizes"

# Under policy block a full ring times the publish out, and it is reported.
run cli topic create tiny --slots 2 --slot-size 8
expect_rc 0 "topic create tiny"
run cli sub tiny --group slow --durable --timeout 0
expect_rc 2 "a durable group that reads nothing (timeout 0 on an empty topic)"
run cli pub tiny --timeout 0.2 <<<$'a\nb\nc'
expect_rc 2 "pub into a full ring under block times out"
expect_match 'message 3 was not published' "$err" "the timed-out message is reported"
expect_match 'published 2 messages' "$err" "the count of what went out is reported"

run cli topic create rejecting --slots 2 --policy reject
expect_rc 0 "topic create rejecting"
run cli sub rejecting --group slow --durable --timeout 0
expect_rc 2 "durable group on rejecting"
run cli pub rejecting <<<$'a\nb\nc'
expect_rc 1 "pub into a full ring under reject"
expect_match 'policy is reject' "$err" "the reject is reported"

run cli topic create empty
expect_rc 0 "topic create empty"
run cli sub empty --timeout 0.3
expect_rc 2 "sub --timeout on an empty topic"
expect_out '' "nothing printed"

# ---- stat -------------------------------------------------------------------------

run cli stat --once --json --interval 0.2
expect_rc 0 "stat --once --json"
expect_match '^\{"time":[0-9.]+,"bus":"'"$bus"'","interval_s":[0-9.]+,"topics":\[' "$out" \
  "stat --json object"
expect_match '"name":"orders","slots":8,"slot_size":64,"policy":"block","tail":5,"producers":0,"msgs_per_sec":0\.000' \
  "$out" "stat --json reports orders"
# Component reports (Bus::report; tests/test_daemon.cpp Reports.* shows one):
# the key is always there, [] with none.
expect_match '"components":\[\]\}$' "$out" "stat --json has an empty components list"
run cli stat --once --interval 0.2
expect_rc 0 "stat --once"
expect_match '^TOPIC +MSGS/S +BYTES/S +TAIL +PRODUCERS +GROUPS$' "$out" "stat table header"
expect_match '^orders +0\.0 +0 B/s +5 +0 +1$' "$out" "stat row of orders"
expect_match '^orders +g +0 +4 +1 +0 +0\.0 +shared$' "$out" "stat group row with its lag"
expect_no_match '^COMPONENT' "$out" "stat prints no component table without reports"
expect_no_match 'Ctrl-C' "$err" "stat --once does not say how to quit"

# On a terminal, stat (which runs until stopped) says how to quit.
script -qfec "$(printf '%q ' "$SHMBUS" stat --interval 0.1 --bus "$bus" --socket "$sock" \
  --daemon "$SHMBUSD")" "$tmp/stat.tty" </dev/null >/dev/null 2>&1 &
stat_tty=$!
wait_until "stat on a terminal says how to quit" grep -q 'Ctrl-C to quit' "$tmp/stat.tty"
pass
kill "$stat_tty"
wait "$stat_tty" 2>/dev/null || true

# bytes/s comes from the producers' own counters. A paced publisher that is
# already publishing when stat takes its first snapshot, and is paced to run
# far past the interval, has published bytes in it.
run cli topic create rated --slot-size 64
expect_rc 0 "topic create rated"
printf '0123456789abcdef' >"$tmp/sixteen"
timeout 20 "$SHMBUS" pub rated --file "$tmp/sixteen" --repeat 100000 --rate 200 \
  --bus "$bus" --socket "$sock" --daemon "$SHMBUSD" 2>"$tmp/rated.err" &
rated=$!
rated_publishing() {
  cli topic describe rated --json 2>/dev/null | grep -Eq '"producers":1,"published":[1-9]'
}
wait_until "the paced publisher has published" rated_publishing
run cli stat --once --json --interval 0.5
expect_rc 0 "stat --once --json while rated is published to"
rated_bytes=$(grep -oE '"name":"rated",[^]]*"bytes_per_sec":[0-9.]+' <<<"$out" |
  sed -E 's/.*"bytes_per_sec":([0-9.]+)$/\1/')
awk -v b="${rated_bytes:-0}" 'BEGIN { exit !(b > 0) }' ||
  fail "stat --json bytes/s of a topic published to during the interval" "> 0" "${rated_bytes:-none}"
pass
expect_match '"name":"rated",[^]]*"bytes_source":"producer_counters"' "$out" \
  "stat --json names where bytes come from"
kill "$rated"
rc=0
wait "$rated" || rc=$?
expect_rc 143 "the paced publisher stops on SIGTERM"
run cli topic delete rated
expect_rc 0 "topic delete rated"

# ---- delete -----------------------------------------------------------------------

# Deleting a topic under a running subscriber: it prints what was published
# before, then says the topic is gone and exits 7. --if-unused refuses (8)
# while it is attached.
run cli topic create doomed --slots 8 --slot-size 64
expect_rc 0 "topic create doomed"
cli sub doomed >"$tmp/doomed" 2>"$tmp/doomed.err" &
doomed=$!
doomed_member() { cli topic describe doomed --json 2>/dev/null | grep -q '"members":1'; }
wait_until "the subscriber of doomed joins" doomed_member
run cli pub doomed <<<$'last words'
expect_rc 0 "pub to doomed"
run cli topic delete doomed --if-unused
expect_rc 8 "topic delete --if-unused while a subscriber is attached"
expect_match "1 member" "$err" "topic delete --if-unused says who is attached"
run cli topic delete doomed
expect_rc 0 "topic delete under a running subscriber"
rc=0
wait "$doomed" || rc=$?
expect_rc 7 "sub exits 7 when its topic is deleted"
out=$(<"$tmp/doomed")
expect_out "last words" "sub printed what was published before the delete"
expect_match "was deleted" "$(<"$tmp/doomed.err")" "sub says the topic was deleted"

# sub --timeout without --count drains: exit 0 once something came.
run cli topic create drained --slots 8 --slot-size 64
run cli pub drained <<<$'a\nb'
run cli sub drained --from earliest --timeout 0.3 -q
expect_rc 0 "sub --timeout without --count after messages came (a drain)"
expect_out $'a\nb' "the drain printed both"
run cli sub drained --timeout 0.2 -q
expect_rc 2 "sub --timeout without --count when nothing came"

run cli sub drained --from 999999 --count 1
expect_rc 64 "sub --from an offset past the tail (a usage error)"
expect_match "at most 2" "$err" "sub --from past the tail names the tail"

# A group that fell behind the ring is shown overrun at once, with what it will lose.
run cli topic create behind --slots 8 --slot-size 16
run cli sub behind --group slow --from earliest --timeout 0.1 -q
expect_rc 2 "sub of an empty topic until quiet"
seq 1 20 | cli pub behind -q 2>/dev/null || true
run cli topic describe behind
expect_match '^  slow +0 +no +0 +20 +0 \+12 overrun +shared$' "$out" "describe shows the group overrun"
expect_match "is overrun: it is 12 messages behind" "$out" "describe explains the overrun"
run cli topic delete behind

# Consumer groups: list, describe, reset, delete (refused while members live).
run cli topic create grp --slots 8 --slot-size 16
printf '1\n2\n3\n' | cli pub grp -q
run cli sub grp --group billing --from earliest --count 1 -q
expect_rc 0 "sub --group billing takes one"
run cli group list grp
expect_rc 0 "group list TOPIC"
expect_match '^grp +billing +0 +no +1 +2 +0 +shared$' "$out" "group list shows billing's position and lag"
run cli group describe grp billing
expect_rc 0 "group describe"
expect_match '^position: +1$' "$out" "group describe shows the position"
run cli group reset grp billing --to latest
expect_rc 0 "group reset --to latest"
expect_out "group 'billing' of topic 'grp' is at 3" "group reset says where the group is"
run cli group reset grp billing --to 99
expect_rc 64 "group reset past the tail (a usage error)"
cli sub grp --group live >/dev/null 2>&1 &
live_sub=$!
live_member() { cli group describe grp live --json 2>/dev/null | grep -q '"members":1'; }
wait_until "the live member joins" live_member
run cli group describe grp live --json
expect_match '"member_seats":\[\{"seat":0,"pid":[0-9]+,"held":null,"received":0\}\]' "$out" \
  "group describe --json lists the member"
run cli group delete grp live
expect_rc 8 "group delete while a member lives"
expect_match "1 live member" "$err" "group delete says why"
kill "$live_sub"
wait "$live_sub" || true
run cli group delete grp billing
expect_rc 0 "group delete"
run cli group describe grp billing
expect_rc 3 "group describe of a deleted group"
run cli topic delete grp

run cli topic list --daemon-uid -3
expect_rc 64 "--daemon-uid that is not a uid (a usage error)"

run cli topic create odd --slots 3
expect_rc 64 "topic create with a slot count that is not a power of two (a usage error)"
run cli topic delete drained --if-unused
expect_rc 0 "topic delete --if-unused of an unused topic"

run cli topic delete orders
expect_rc 0 "topic delete orders"
expect_out "deleted topic 'orders' from bus '$bus'" "topic delete output"
run cli topic describe orders
expect_rc 3 "topic describe of a deleted topic"
expect_match '^shmbus: .*orders' "$err" "a friendly message names the topic"
run cli topic delete orders
expect_rc 3 "topic delete of a deleted topic"
run cli topic list
expect_no_match '^orders ' "$out" "orders is no longer listed"

# ---- partitions, keys and priority lanes ---------------------------------------

run cli topic create kp --partitions 8 --slots 64
expect_rc 0 "topic create --partitions 8"
expect_match "^created topic 'kp' .*: 8 partitions of 64 slots" "$out" "create says 8 partitions"
run cli topic create bad --partitions 2 --priorities 4
expect_rc 64 "--partitions with --priorities"
expect_one_error_line "--partitions with --priorities"
run cli topic create bad --priorities 1
expect_rc 64 "--priorities 1"
run cli topic create bad --partitions 2000
expect_rc 64 "--partitions 2000"
expect_match "partitions 2000 must be between 1 and 1024" "$err" "--partitions 2000 says the range"
run cli topic describe kp --json
expect_match '"partitions":8,"priorities":0,"per_partition":\[\{"partition":0,"tail":0' "$out" \
  "describe --json has the partitions"

# Routing errors name what the topic has, before anything is published.
run cli pub kp --partition 8 <<<"x"
expect_rc 64 "pub --partition 8 on 8 partitions"
expect_match "topic 'kp' has partitions 0 to 7" "$err" "--partition out of range says the range"
run cli pub kp --priority 1 <<<"x"
expect_rc 64 "pub --priority on a topic without lanes"
expect_match "has no priority lanes" "$err" "--priority without lanes"
run cli pub kp --key k --key-separator : <<<"x"
expect_rc 64 "--key with --key-separator"
printf 'k1:v1\nno separator here\nk3:v3\n' >"$tmp/keyed-bad"
run cli pub kp --key-separator : --file "$tmp/keyed-bad" --lines
expect_rc 1 "a file line without the key separator"
expect_match "^shmbus: message 2 has no key separator ':'" "$err" "names the line without separator"
run cli topic describe kp --json
expect_match '"tail":0,' "$out" "a file with a bad line publishes nothing"

# Two members of a partitioned group split the partitions; only then are keyed
# messages published, so each key stays with one member, in order.
member() {  # OUTFILE: a member of group pg, in the background
  timeout 20 "$SHMBUS" sub kp --group pg --group-mode partitioned --from earliest --show-key \
    --show-partition -q --bus "$bus" --socket "$sock" --daemon "$SHMBUSD" >"$1" 2>"$1.err" &
}
member "$tmp/m1"
m1=$!
one_member() { cli group describe kp pg --json 2>/dev/null | grep -q '"members":1'; }
wait_until "the first partitioned member joins" one_member
member "$tmp/m2"
m2=$!
# Settled: every partition owned, by two different processes.
settled() {
  local j
  j=$(cli group describe kp pg --json 2>/dev/null) || return 1
  grep -q '"members":2' <<<"$j" || return 1
  ! grep -q '"owner_pid":null' <<<"$j" || return 1
  [[ $(grep -Eo '"owner_pid":[0-9]+' <<<"$j" | sort -u | wc -l) -eq 2 ]]
}
wait_until "two members own the 8 partitions" settled
for i in $(seq 1 300); do echo "key$((i % 50)):$i"; done >"$tmp/keyed"
run cli pub kp --key-separator : --file "$tmp/keyed" --lines
expect_rc 0 "pub of 300 keyed messages"
all_taken() { [[ $(cat "$tmp/m1" "$tmp/m2" | wc -l) -ge 300 ]]; }
wait_until "the two members print 300 messages" all_taken
kill -TERM "$m1" "$m2"
wait "$m1" || true
wait "$m2" || true
[[ -s $tmp/m1 && -s $tmp/m2 ]] || fail "both partitioned members take messages" "two non-empty" \
  "$(wc -l <"$tmp/m1") and $(wc -l <"$tmp/m2") lines"
pass
# Lines are "PARTITION: KEY<TAB>VALUE".
out=$(cut -f2 "$tmp/m1" "$tmp/m2" | sort -n)
expect_out "$(seq 1 300)" "the partitioned group took every message exactly once"
for m in m1 m2; do
  # Per key: values increasing, one partition.
  awk -F'\t' '{ split($1, a, ": "); k = a[2]; p = a[1]
      if ((k in last) && $2 <= last[k]) { print "order " k; exit 1 }
      if ((k in part) && part[k] != p) { print "partition " k; exit 1 }
      last[k] = $2; part[k] = p }' "$tmp/$m" >"$tmp/check" ||
    fail "per-key order and partition in $m" "increasing, one partition" "$(<"$tmp/check")"
  pass
done
keys_split() { cut -f1 "$tmp/m1" | sort -u >"$tmp/k1"; cut -f1 "$tmp/m2" | sort -u >"$tmp/k2"
  [[ -z $(comm -12 "$tmp/k1" "$tmp/k2") ]]; }
keys_split || fail "no key goes to both partitioned members" "disjoint keys" \
  "$(comm -12 "$tmp/k1" "$tmp/k2" | head -3)"
pass

# A shared group on the same topic gets every message too.
run cli sub kp --group sg --from earliest --count 300 -q
expect_rc 0 "a shared group reads the keyed topic"
out=$(sort -n <<<"$out")
expect_out "$(seq 1 300)" "the shared group took every message exactly once"
# Joining the partitioned group without --group-mode takes its mode.
run cli sub kp --group pg --timeout 0.2 -q
expect_rc 2 "joining pg without --group-mode (nothing left, so a timeout)"
run cli sub kp --group pg --group-mode shared --timeout 0.2
expect_rc 64 "joining pg as shared"
expect_match "group 'pg' of topic 'kp' is partitioned" "$err" "a mode mismatch says the mode"
run cli sub kp --group-mode partitioned --timeout 0.2
expect_rc 64 "--group-mode without --group"

# describe and stat per partition.
run cli topic describe kp
expect_match '^  PARTITION +TAIL +ABANDONED$' "$out" "describe has a partition table"
expect_match '^  pg +.* partitioned$' "$out" "describe shows the group's mode"
run cli group describe kp pg
expect_match '^mode: +partitioned' "$out" "group describe shows the mode"
expect_match '^  PARTITION +POSITION +LAG +OWNER_PID$' "$out" "group describe per partition"
run cli stat --once --interval 0.1
expect_rc 0 "stat --once"
expect_match '^kp +7 +[0-9]+ +' "$out" "stat lists partition 7's tail"
expect_match '^kp +pg +7 +[0-9]+ +0 +-$' "$out" "stat: group pg in partition 7, no owner now"
run cli stat --once --interval 0.1 --json
expect_match '"per_partition":\[\{"partition":0,"tail":[0-9]+' "$out" "stat --json per partition"

# --key: one key for every message; an explicit --partition wins over it.
run cli pub kp --key same --partition 3 <<<"pinned"
expect_rc 0 "pub --key --partition"
run cli sub kp --group sg --count 1 --show-key --show-partition --show-offset \
  --key-separator '=' -q
expect_match '^3: [0-9]+: same=pinned$' "$out" "sub shows partition, offset and key"

# Priority lanes: a backlog comes out highest first, publish order within a lane.
run cli topic create lanes --priorities 4
expect_rc 0 "topic create --priorities 4"
expect_match ": 4 priority lanes of " "$out" "create says 4 priority lanes"
run cli pub lanes --priority 0 < <(printf 'low1\nlow2\n')
expect_rc 0 "pub --priority 0"
run cli pub lanes --priority 3 < <(printf 'high1\nhigh2\n')
expect_rc 0 "pub --priority 3"
run cli pub lanes < <(printf 'low3\n')
expect_rc 0 "pub without --priority (lane 0)"
run cli pub lanes --priority 1 <<<"mid"
expect_rc 0 "pub --priority 1"
run cli pub lanes --priority 4 <<<"x"
expect_rc 64 "pub --priority 4 of 4 lanes"
expect_match "topic 'lanes' has priorities 0 to 3" "$err" "--priority out of range says the range"
run cli pub lanes --partition 1 <<<"x"
expect_rc 64 "pub --partition on a priority topic"
run cli sub lanes --from earliest --count 6 --show-partition -q
expect_rc 0 "sub of the priority backlog"
expect_out $'3: high1\n3: high2\n1: mid\n0: low1\n0: low2\n0: low3' "highest lane first"
run cli topic describe lanes
expect_match '^priority lanes: +4 ' "$out" "describe says the lanes"
expect_match '^  LANE +TAIL +ABANDONED$' "$out" "describe has a lane table"

run cli topic delete kp
expect_rc 0 "topic delete kp"
run cli topic delete lanes
expect_rc 0 "topic delete lanes"

# ---- headers (message properties) -------------------------------------------------

run cli topic create hdr --slot-size 128
expect_rc 0 "topic create hdr"
run cli pub hdr --header tag=TagA --header trace=t-1 --key k1 <<<"with"
expect_rc 0 "pub --header"
run cli pub hdr <<<"without"
expect_rc 0 "pub without headers"
run cli sub hdr --from earliest --count 2 --show-headers --show-key -q
expect_rc 0 "sub --show-headers"
expect_out $'tag=TagA,trace=t-1\tk1\twith\n\t\twithout' "headers, then key, then value"
run cli pub hdr --header novalue <<<"x"
expect_rc 64 "--header without '='"
expect_match "is not NAME=VALUE" "$err" "--header NAME=VALUE error"
run cli pub hdr --header =v <<<"x"
expect_rc 64 "--header with an empty name"
run cli pub hdr $(for i in $(seq 1 17); do printf -- '--header h%s=v ' "$i"; done) <<<"x"
expect_rc 64 "17 headers"
expect_match "at most 16 headers" "$err" "the header limits are named"
run cli pub hdr --header "big=$(head -c 120 /dev/zero | tr '\0' v)" <<<"x"
expect_rc 1 "headers that do not fit the slot"
expect_match "bytes of headers" "$err" "the slot-size error counts the headers"
run cli topic describe hdr --json
expect_match '"tail":2,' "$out" "refused header messages publish nothing"
run cli topic delete hdr
expect_rc 0 "topic delete hdr"

# Tag filters: sub --tags takes only those tags; the rest counts as filtered.
run cli topic create tagged --slot-size 128
expect_rc 0 "topic create tagged"
for t in TagA TagC TagB TagA; do
  run cli pub tagged --header tag=$t <<<"$t"
  expect_rc 0 "pub tag $t"
done
run cli pub tagged <<<"untagged"
expect_rc 0 "pub untagged"
run cli sub tagged --group tg --from earliest --tags 'TagA || TagB' --timeout 0.5 -q
expect_rc 0 "sub --tags"
expect_out $'TagA\nTagB\nTagA' "only TagA and TagB are printed"
run cli group describe tagged tg --json
expect_match '"lag":0,"lost":0,"overrun":0,"filtered":2,' "$out" "the others count as filtered"
run cli group describe tagged tg
expect_match '^filtered: +2 ' "$out" "group describe shows filtered"
run cli sub tagged --group bad --tags 'TagA ||' --timeout 0.2
expect_rc 64 "a malformed tag filter"
expect_match "is not TAG \|\| TAG" "$err" "the tag filter error says the form"
run cli topic delete tagged
expect_rc 0 "topic delete tagged"

# At-least-once groups: sub --delivery at-least-once acknowledges what it printed;
# a later member joins with the group's delivery; describe shows it.
run cli topic create acked --slot-size 128
expect_rc 0 "topic create acked"
run cli pub acked <<<$'a1\na2\na3'
expect_rc 0 "pub acked"
run cli sub acked --group w --delivery at-least-once --from earliest --count 2 -q
expect_rc 0 "sub --delivery at-least-once"
expect_out $'a1\na2' "the first two are printed"
run cli sub acked --group w --count 1 -q
expect_rc 0 "sub joins the at-least-once group"
expect_out 'a3' "the third goes to the next member (the first two were acknowledged)"
run cli group describe acked w
expect_match '^delivery: +at_least_once ' "$out" "group describe shows the delivery"
expect_match '^max deliveries: +5$' "$out" "group describe shows max deliveries"
run cli group describe acked w --json
expect_match '"delivery":"at_least_once","max_deliveries":5,"redelivered":0,' "$out" \
  "group describe --json shows the delivery"
run cli sub acked --group w --delivery at-most-once --timeout 0.2
expect_rc 64 "joining an at-least-once group as at-most-once"
expect_match "is at_least_once" "$err" "the error names the group's delivery"
run cli sub acked --group v --delivery twice --timeout 0.2
expect_rc 64 "a bad --delivery"
run cli topic delete acked
expect_rc 0 "topic delete acked"

# ---- file topics ---------------------------------------------------------------
# topic create --storage file [--flush interval:N]: two files in the daemon's
# data directory (SHMBUS_DATA_DIR, inherited by the autospawned daemon);
# describe shows the storage, the file and the last flush. The topic stays
# to the end, where a new daemon serves it again.
run cli topic create durable --slot-size 64 --storage file --flush interval:50ms
expect_rc 0 "topic create --storage file"
expect_match "file $tmp/data/durable, flush interval:50ms" "$out" "create says where the file is"
[[ -f $tmp/data/durable && -f $tmp/data/durable@control ]] ||
  fail "the topic's files" "$tmp/data/durable and @control" "$(ls -la "$tmp/data" 2>&1)"
pass
run cli pub durable <<<$'d1\nd2'
expect_rc 0 "pub to a file topic"
run cli topic describe durable
expect_match "^storage: +file $tmp/data/durable " "$out" "describe shows the storage and the file"
expect_match '^flush: +interval:50ms ' "$out" "describe shows the flush policy"
flushed() { cli topic describe durable --json | grep -q '"flushed_ns":[0-9]'; }
wait_until "shmbusd flushes the topic by itself" flushed
run cli topic describe durable --json
expect_match '"storage":"file","flush":"interval:50ms","path":"' "$out" "describe --json storage"
run cli topic create bad --storage disk
expect_rc 64 "a bad --storage"
run cli topic create bad --storage file --flush often
expect_rc 64 "a bad --flush"
expect_match "interval:N" "$err" "the --flush error says the form"
run cli topic create bad --flush interval:10ms
expect_rc 64 "--flush without --storage file"

# ---- delayed messages ----------------------------------------------------------

run cli topic create delayed --slot-size 64 --delay-slots 4
expect_rc 0 "topic create --delay-slots"
run cli pub delayed --at 2099-12-24T18:00:00Z <<<"far"
expect_rc 0 "pub --at"
run cli pub delayed --delay 200ms --header tag=T <<<"soon"
expect_rc 0 "pub --delay"
run cli sub delayed --from earliest --count 1 --show-headers -q
expect_rc 0 "sub receives the message once it is due"
expect_out $'tag=T\tsoon' "only the due message came"
run cli topic describe delayed
expect_match '^delay slots: +4$' "$out" "describe shows the delay slots"
expect_match '^scheduled: +1, next due 2099-12-24T18:00:00.000Z; 1 moved$' "$out" \
  "describe shows what is scheduled and when it is due"
run cli topic describe delayed --json
expect_match '"scheduled":1,"overdue":0,"next_due_ns":4101818400000000000,' "$out" \
  "describe --json shows the schedule"
run cli stat --once --interval 0.2
expect_match '^TOPIC +SCHEDULED +OVERDUE +NEXT_DUE +MOVED$' "$out" "stat shows the schedules"
expect_match '^delayed +1 +0 +2099-12-24T18:00:00.000Z +1$' "$out" "stat's schedule row"
run cli pub delayed --delay 5 <<<"x"
expect_rc 64 "--delay without a unit"
expect_match "is not a duration: a number and a unit, as 500ms, 5s, 2m, 1h" "$err" \
  "the --delay error shows the form"
run cli pub delayed --at 2026-12-24T18:00:00 <<<"x"
expect_rc 64 "--at without a zone"
expect_match "RFC 3339 with its zone" "$err" "the --at error shows the form"
run cli pub delayed --at 2026-12-24T18:00:00Z --delay 1s <<<"x"
expect_rc 64 "--at with --delay"
run cli pub delayed --delay 1h --timeout 0.2 <<<$'a\nb\nc\nd'
expect_rc 2 "a full schedule under block waits, then times out (exit 2)"
expect_match "schedule of topic 'delayed' stayed full" "$err" "the full-schedule error names it"
run cli pub tagged --delay 1s <<<"x"
expect_rc 3 "pub --delay to a missing topic"
run cli topic create nodelay --slot-size 64
run cli pub nodelay --delay 1s <<<"x"
expect_rc 1 "pub --delay to a topic without a schedule"
expect_match "create it with --delay-slots N" "$err" "the no-schedule error says what to do"
run cli topic delete nodelay
run cli topic delete delayed
expect_rc 0 "topic delete delayed"

# ---- request-reply (the round trip itself is tested from Python, with a responder) --

run cli topic create svc --slot-size 256
run cli request svc 'ping' --timeout 0.2
expect_rc 2 "request with no responder times out"
expect_match "no reply from topic 'svc' within 0.2s" "$err" "the request timeout names the topic"
run cli request nosuch 'ping' --timeout 0.2
expect_rc 3 "request to a missing topic"
run cli request svc
expect_rc 64 "request without a payload"
run cli topic delete svc

# ---- a damaged topic --------------------------------------------------------------

# A stray write over the stamp of sequence 17 (ring slot 2: slots fill in the order
# 0, 2, 1, 3 within each block of four) with a value no producer leaves: `sub`
# skips it, says so on stderr with the group's corrupt count, and goes on.
run cli topic create damaged --slots 16 --slot-size 64
expect_rc 0 "topic create damaged"
run cli pub damaged < <(seq -f 'm%g' 0 19)
expect_rc 0 "pub of twenty lines to damaged"
# The region is a memfd of the daemon's (no name in /dev/shm): reached through
# the daemon's descriptor table, as its owner (root here) may.
region=""
for fd in /proc/"$daemon_pid"/fd/*; do
  if [[ $(readlink "$fd") == "/memfd:shmbus.$bus.damaged (deleted)" ]]; then region=$fd; break; fi
done
[[ -n $region ]] || fail "the daemon holds the region of damaged" "a memfd" "none"
stride=$(od -An -t u4 -j 40 -N 4 "$region" | tr -d ' ')
slots=$(od -An -t u8 -j 80 -N 8 "$region" | tr -d ' ')
printf '\001\000\000\000\000\000\000\000' |
  dd of="$region" bs=1 seek=$((slots + 2 * stride)) conv=notrunc status=none
run cli sub damaged --from earliest --timeout 1
expect_rc 0 "sub of a topic with a damaged slot drains the rest"
expect_out "$(seq -f 'm%g' 4 16; echo m18; echo m19)" "sub skips only the damaged message"
expect_match "^shmbus: topic 'damaged' is damaged: .*\(corrupt count 1\)\$" "$err" \
  "sub names the damaged topic and its corrupt count"
run cli topic delete damaged
expect_rc 0 "topic delete damaged"

# ---- daemon ---------------------------------------------------------------------

run cli daemon status
expect_rc 0 "daemon status"
expect_match '^shmbusd is running$' "$out" "daemon status headline"
expect_match "^socket: +$sock\$" "$out" "daemon status prints the socket"
expect_match "^pid: +$daemon_pid\$" "$out" "daemon status prints the pid"
expect_match '^topics: +7$' "$out" "daemon status prints the topic count"

run cli daemon stop
expect_rc 0 "daemon stop"
expect_match "^stopped shmbusd \(pid $daemon_pid\)" "$out" "daemon stop output"

run cli daemon status
[[ $rc -eq 1 || $rc -eq 5 ]] || fail "daemon status after stop (exit code)" "1 or 5" "$rc"
pass
[[ ! -e $sock ]] || fail "daemon status after stop must not autospawn" "no socket" "a socket"
pass
daemon_gone() { ! kill -0 "$daemon_pid" 2>/dev/null; }
wait_until "the daemon process exits" daemon_gone
pass

run cli daemon stop
expect_rc 5 "daemon stop with no daemon"

# The file topic outlives its daemon: the next command starts one, which
# serves it again from its files.
run cli sub durable --from earliest --count 2 -q
expect_rc 0 "sub on a file topic after the daemon stopped"
expect_out $'d1\nd2' "a new daemon serves the file topic's messages"
run cli topic delete durable
expect_rc 0 "topic delete durable"
[[ ! -e $tmp/data/durable && ! -e $tmp/data/durable@control ]] ||
  fail "delete removes the topic's files" "none" "$(ls -la "$tmp/data" 2>&1)"
pass

echo "cli e2e: $passed passed, 0 failed"
