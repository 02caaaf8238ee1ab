#!/bin/sh
# Runs INSIDE the IPVS VM, started by measure.ts (node test/ipvs-vm/measure/measure.ts). Times Node
# process starts: kproxy from source (bin/kproxy) and bundled (KPROXY_BUNDLE, see buildKproxyBundle),
# a flow-test agent, vitest on a trivial test; each without Node's compile cache, with a cache the
# VM fills itself (cold, then warm), and with one measure.ts filled on the host before the boot.
# Prints a table and writes it to $IPVSVM_RESULTS/measure.txt.
set -u
R=$(pwd)
N=$R/node_modules/node/bin/node
OUT=$IPVSVM_RESULTS/measure.txt
ERR=$IPVSVM_RESULTS/measure.err
CC_VM=$R/.cache/measure/cc-vm
CC_HOST=$R/.cache/measure/cc-host
rm -rf "$CC_VM"
now() { cut -d' ' -f1 /proc/uptime; }
t() { # t LABEL CMD...: run once, print wall seconds
  label=$1
  shift
  s=$(now)
  "$@" >/dev/null 2>>"$ERR" </dev/null
  rc=$?
  e=$(now)
  printf "%-58s %6.1f s  rc=%s\n" "$label" "$(awk -v a="$s" -v b="$e" 'BEGIN { print b - a }')" "$rc" | tee -a "$OUT"
}
help() { "$R/bin/kproxy" --help; }
dump() { "$R/bin/kproxy" dump --manifests examples --hostname-override node-a; }
bhelp() { "$KPROXY_BUNDLE" --help; }
bdump() { "$KPROXY_BUNDLE" dump --manifests examples --hostname-override node-a; }
agent() { echo | "$N" --disable-warning=ExperimentalWarning src/sandbox/agent.ts m; }
vt() { "$N" node_modules/vitest/vitest.mjs run --configLoader native --config test/ipvs-vm/measure/vitest.trivial.config.ts; }
cc() {
  dir=$1
  shift
  NODE_COMPILE_CACHE=$dir "$@"
}
echo "guest $(uname -r), $(nproc) vCPU; repository: $(grep " $R " /proc/mounts | cut -d' ' -f4 | tr ',' '\n' | grep -E '^(loose|mmap)')" | tee "$OUT"
t "node -e 0" "$N" -e 0
t "node -e 0, again" "$N" -e 0
t "kproxy --help (source), no compile cache" help
t "kproxy --help (source), no compile cache, again" help
t "kproxy --help (source), compile cache cold (VM)" cc "$CC_VM" help
t "kproxy --help (source), compile cache warm (VM)" cc "$CC_VM" help
t "kproxy --help (source), compile cache warmed on the host" cc "$CC_HOST" help
t "kproxy dump (source), no compile cache" dump
t "kproxy dump (source), compile cache warm (VM)" cc "$CC_VM" dump
t "kproxy --help (bundle), no compile cache" bhelp
t "kproxy --help (bundle), compile cache cold (VM)" cc "$CC_VM" bhelp
t "kproxy --help (bundle), compile cache warm (VM)" cc "$CC_VM" bhelp
t "kproxy --help (bundle), compile cache warmed on the host" cc "$CC_HOST" bhelp
t "kproxy dump (bundle), no compile cache" bdump
t "kproxy dump (bundle), compile cache warm (VM)" cc "$CC_VM" bdump
t "kproxy dump (bundle), compile cache warmed on the host" cc "$CC_HOST" bdump
t "flow-test agent start+exit, no compile cache" agent
t "flow-test agent start+exit, compile cache cold (VM)" cc "$CC_VM" agent
t "flow-test agent start+exit, compile cache warm (VM)" cc "$CC_VM" agent
t "vitest, trivial test, no compile cache" vt
t "vitest, trivial test, compile cache cold (VM)" cc "$CC_VM" vt
t "vitest, trivial test, compile cache warm (VM)" cc "$CC_VM" vt
t "vitest, trivial test, compile cache warmed on the host" cc "$CC_HOST" vt
echo "compile cache filled in the VM: $(find "$CC_VM" -type f | wc -l) files, $(du -sh "$CC_VM" | cut -f1)" | tee -a "$OUT"
