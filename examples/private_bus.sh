# shellcheck shell=bash
# Sourced by the example tests: a bus and socket of their own, with shmbusd
# autospawned by the first client, stopped and cleaned up on exit.
#
#   private_bus <name-prefix> <path-to-shmbus> <path-to-shmbusd>
# sets $tmp (a scratch directory), $bus and $SHMBUS; exports SHMBUS_SOCKET and
# SHMBUS_DAEMON; traps EXIT to stop the daemon and remove the bus's files.

private_bus() {
  SHMBUS=$(realpath "$2")
  tmp=$(mktemp -d "/tmp/shmbus-$1.XXXXXX")
  bus="$1$$"
  export SHMBUS_SOCKET="$tmp/bus.sock"
  export SHMBUS_DAEMON
  SHMBUS_DAEMON=$(realpath "$3")
  trap private_bus_cleanup EXIT
}

private_bus_cleanup() {
  local rc=$?
  trap - EXIT
  timeout 10 "$SHMBUS" daemon stop --bus "$bus" --socket "$SHMBUS_SOCKET" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  rm -f /dev/shm/shmbus."$bus".* /dev/shm/shmbus."$bus"@*
  exit "$rc"
}
