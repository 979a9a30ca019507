#!/usr/bin/env bash
# Installs what shmbus needs from Debian 12 packages, only what is missing.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config
          libboost-dev libconcurrentqueue-dev libbenchmark-dev libgtest-dev
          libspdlog-dev libcli11-dev libtomlplusplus-dev clang libclang-rt-14-dev
          pybind11-dev python3-dev python3-pytest python3-numpy
          librdkafka-dev nats-server libnats-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all present"
  exit 0
fi
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
