#!/usr/bin/env bash
# Installs what kproxy needs on Debian: the kernel tools (nftables, iptables, ipvsadm, conntrack,
# iproute2) and the npm dependencies, including the pinned Node 24. Skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in nft:nftables iptables:iptables ipvsadm:ipvsadm conntrack:conntrack ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "kproxy: missing ${need[*]}; run as root to install them with apt-get" >&2
    exit 1
  fi
  echo "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x node_modules/node/bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
