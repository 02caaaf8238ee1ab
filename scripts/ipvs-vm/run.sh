#!/bin/bash
# scripts/ipvs-vm/run.sh - run a shell command inside a throw-away QEMU VM that boots a stock
# Debian kernel (linux-image-*-amd64) WITH IPVS (ip_vs*), for kproxy's IPVS tests.
# Adapted from the reference runner (run-in-ipvs-vm.sh); see scripts/ipvs-vm/README.md.
#
# Why: the development/CI machines' kernels may lack CONFIG_IP_VS (and KVM), so IPVS code is
# tested against a real kernel in a VM under software emulation (TCG) when KVM is not usable.
#
# Usage:
#   scripts/ipvs-vm/run.sh [--] 'shell command'       # command read by /bin/sh inside the VM
#   echo 'script' | scripts/ipvs-vm/run.sh -          # script from stdin
#   scripts/ipvs-vm/run.sh --setup                    # only install/download/build, no boot
#
# The command's stdout+stderr (merged) are streamed to our stdout; our exit status is the
# command's, or one of these (the runner's own messages go to stderr, prefixed "ipvs-vm:"):
#   120  qemu-system-x86_64 is missing and could not be installed (apt-get; needs root)
#   121  the kernel package (or busybox-static) could not be resolved, downloaded or unpacked
#   124  host-side timeout (IPVSVM_TIMEOUT)
#   125  any other VM / setup failure (boot failed, no exit status, bad settings)
# A command that itself exits 120..125 is indistinguishable from these: callers that must tell
# them apart look for the "ipvs-vm: FATAL" line on stderr (test/ipvs-vm/run-in-vm.ts does).
#
# What the VM looks like (default IPVSVM_HOSTROOT=1):
#   * the host's "/" is exported READ-ONLY over virtio-9p and is the lower layer of an overlayfs
#     whose upper layer is a tmpfs: the command sees the host's userland (node, ipvsadm, ip, nft,
#     ...), can write anywhere, and every write is thrown away at power-off ...
#   * ... except the shared directory IPVSVM_SHARE (default: $PWD), mounted READ-WRITE (9p) at
#     the same path: results go back to the host through it.
#   * cwd = the caller's $PWD (if it exists in the VM), HOME=/root, IPVSVM_GUEST=1, PATH plus
#     /run/ipvsvm/bin (busybox modprobe/lsmod/insmod: the host may have no kmod).
#   * /lib/modules/<guest kver> holds the guest kernel's netfilter/IPVS/9p/veth/... modules;
#     the kernel auto-loads them through busybox modprobe.
#   * /tmp and /run are fresh tmpfs: host files under /tmp are NOT visible in the VM.
#   * /run/ipvsvm/hostroot is the host's / read-only as it is (also what lies below the share).
#   * no network to the outside world; only "lo" is up (create veth/netns/dummy yourself).
#   * under TCG: ~4-7 s per empty boot/run/exit cycle, each exec ~0.06-0.5 s, JIT-heavy JS
#     15-25x slower than on the host, every node start that loads many modules 10-30 s.
# With IPVSVM_HOSTROOT=0 the command runs in the busybox initramfs, which also bundles ipvsadm,
# ip, iptables(-nft/-legacy), ipset, nft, conntrack.
#
# Only one VM runs at a time per cache directory: a second call waits for the first (the
# machines this runs on have 2 cores). IPVSVM_LOCK=0 lifts that.
#
# Environment knobs:
#   IPVSVM_DIR      cache dir (debs, kernel, initramfs; ~600 MB)   default: $XDG_CACHE_HOME/kproxy-ipvs-vm,
#                   else /var/cache/kproxy-ipvs-vm as root, else ~/.cache/kproxy-ipvs-vm
#   IPVSVM_SHARE    host dir shared read-write            default: $PWD   ("" = none)
#   IPVSVM_SHARE_CACHE 9p cache mode of the share: mmap (default: every read goes to the host) or
#                   loose (page cache, attributes cached: much faster for Node's module loading;
#                   host-side changes made while the VM runs may go unseen)
#   IPVSVM_HOSTROOT 1 = host / read-only + overlay (default), 0 = initramfs only
#   IPVSVM_PRELOAD  modules modprobed at boot             default: see DEFAULT_PRELOAD
#   IPVSVM_MODULE_DIRS module-tree dirs copied whole into the initramfs (besides MODULES)
#   IPVSVM_MEM      guest RAM in MiB                      default: 2048
#   IPVSVM_SMP      guest vCPUs                           default: 1 (2 was no faster on a 2-core host)
#   IPVSVM_TIMEOUT  host-side timeout in seconds          default: 900
#   IPVSVM_ACCEL    auto | tcg | kvm                      default: auto (see pick_accel)
#   IPVSVM_CPU      QEMU CPU model under TCG              default: Westmere
#   IPVSVM_KPKG     kernel package to use                 default: what linux-image-amd64 depends on
#   IPVSVM_NO_INSTALL 1 = never apt-get install qemu (fail with 120 instead)
#   IPVSVM_LOCK     0 = do not wait for other VMs using the same cache dir
#   IPVSVM_APPEND   extra kernel command line arguments
#   IPVSVM_BUNDLE_NODE 1 = put the host's node (+libs) into the initramfs (for HOSTROOT=0)
#   IPVSVM_QEMU_ARGS extra qemu arguments (word-split)
#   IPVSVM_ENV      names of host env variables to export into the VM, e.g. "NODE_OPTIONS CI"
#   IPVSVM_VERBOSE  1 = copy the kernel console log to stderr
#   IPVSVM_KEEPLOG  path: keep the kernel console log there
set -euo pipefail

E_QEMU=120 E_KERNEL=121 E_TIMEOUT=124 E_VM=125

default_dir() {
  if [ -n "${XDG_CACHE_HOME:-}" ]; then echo "$XDG_CACHE_HOME/kproxy-ipvs-vm"
  elif [ "$(id -u)" = 0 ]; then echo /var/cache/kproxy-ipvs-vm
  else echo "${HOME:-/tmp}/.cache/kproxy-ipvs-vm"; fi
}
DIR=${IPVSVM_DIR:-$(default_dir)}
MEM=${IPVSVM_MEM:-2048}
SMP=${IPVSVM_SMP:-1}
TIMEOUT=${IPVSVM_TIMEOUT:-900}
HOSTROOT=${IPVSVM_HOSTROOT:-1}
SHARE=${IPVSVM_SHARE-$PWD}
SHARE_CACHE=${IPVSVM_SHARE_CACHE:-mmap}
case "$SHARE_CACHE" in mmap|loose|none) ;; *) echo "ipvs-vm: FATAL(125): IPVSVM_SHARE_CACHE must be mmap, loose or none" >&2; exit 125;; esac
# Modules loaded at boot. Everything else in the initramfs is auto-loaded on demand by the
# kernel (request_module -> busybox modprobe + modules.alias), e.g. nft_chain_nat, xt_*.
DEFAULT_PRELOAD="ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack veth dummy"
PRELOAD=${IPVSVM_PRELOAD-$DEFAULT_PRELOAD}

# Modules copied into the initramfs (plus their dependencies from modules.dep).
MODULES="
  ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_lc ip_vs_wlc ip_vs_mh xt_ipvs
  nf_conntrack nf_conntrack_netlink nf_nat nf_conntrack_ftp
  nf_tables nft_chain_nat nft_ct nft_compat nft_masq nft_nat nft_redir nft_reject_inet
  nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_limit nft_numgen nft_hash nft_objref nft_quota nft_log
  nfnetlink_queue nfnetlink_log
  ip_tables iptable_filter iptable_nat iptable_mangle iptable_raw
  ip6_tables ip6table_filter ip6table_nat ip6table_mangle ip6table_raw
  xt_MASQUERADE xt_conntrack xt_comment xt_mark xt_addrtype xt_set xt_nat xt_multiport
  xt_statistic xt_physdev xt_tcpudp xt_REDIRECT xt_state xt_CT xt_recent xt_limit xt_LOG
  xt_NFQUEUE xt_owner xt_pkttype xt_connmark xt_nfacct xt_socket xt_TPROXY
  ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet
  ip_set_hash_net ip_set_hash_netport ip_set_hash_ipmark ip_set_bitmap_port ip_set_list_set
  br_netfilter bridge veth dummy macvlan ipvlan vxlan tun ipip
  9p 9pnet_virtio virtio_pci virtio_console virtio_net overlay
  crc32c_generic crc32c-intel nf_log_syslog
"
# ... plus every module in these directories of the kernel's module tree (all of netfilter,
# ~7 MB): without them an "ip" table with "reject" fails (nft_reject_ipv4 is not in the list).
MODULE_DIRS=${IPVSVM_MODULE_DIRS-"kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter"}
BUNDLE_NODE=${IPVSVM_BUNDLE_NODE:-0}
# Debian packages unpacked into the VM (not onto the host) when the host lacks the files.
EXTRA_PKGS=${IPVSVM_EXTRA_PKGS-"ipset libipset13"}
# Userland bundled into the initramfs (used in IPVSVM_HOSTROOT=0 mode; harmless otherwise).
BUNDLE_BINS="/usr/sbin/ipvsadm /usr/sbin/ip /usr/sbin/nft /usr/sbin/conntrack
  /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /bin/dash /bin/bash"

log() { echo "ipvs-vm: $*" >&2; }
# fatal CODE MESSAGE: one clear line for humans and for test/ipvs-vm/run-in-vm.ts
fatal() { local code=$1; shift; echo "ipvs-vm: FATAL($code): $*" >&2; exit "$code"; }
die() { fatal "$E_VM" "$*"; }

# ---------------------------------------------------------------------------------------
# setup: install qemu if missing, download + unpack the kernel and busybox-static into $DIR
# (nothing else is installed on the host; the .debs are only unpacked)
# ---------------------------------------------------------------------------------------
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  APT_UPDATED=1
  log "apt-get update ..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || log "warning: apt-get update failed"
}

ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null && return 0
  local why="qemu-system-x86_64 is not installed"
  [ "${IPVSVM_NO_INSTALL:-0}" = 1 ] && fatal $E_QEMU "$why (IPVSVM_NO_INSTALL=1); install it: apt-get install --no-install-recommends qemu-system-x86"
  command -v apt-get >/dev/null || fatal $E_QEMU "$why and there is no apt-get; install QEMU (qemu-system-x86_64) by hand"
  [ "$(id -u)" = 0 ] || fatal $E_QEMU "$why; as root: apt-get install --no-install-recommends qemu-system-x86 (or run this as root once: make ipvs-vm-setup)"
  log "installing qemu-system-x86 (apt-get, --no-install-recommends) ..."
  local inst=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86)
  if ! "${inst[@]}" > "$DIR/qemu-install.log" 2>&1; then apt_update; "${inst[@]}" > "$DIR/qemu-install.log" 2>&1 || tail -15 "$DIR/qemu-install.log" >&2; fi
  command -v qemu-system-x86_64 >/dev/null || fatal $E_QEMU "$why and 'apt-get install --no-install-recommends qemu-system-x86' failed (log: $DIR/qemu-install.log)"
  log "installed $(qemu-system-x86_64 --version | head -1)"
}

# apt-get download PKGS... into $DIR/debs (retrying once after apt-get update)
apt_download() {
  # as root, apt would drop to user _apt, who cannot write to $DIR/debs (a harmless warning)
  local o=(); [ "$(id -u)" = 0 ] && o=(-o APT::Sandbox::User=root)
  (cd "$DIR/debs" && apt-get -q "${o[@]}" download "$@" >&2) && return 0
  [ "$(id -u)" = 0 ] || return 1
  apt_update
  (cd "$DIR/debs" && apt-get -q "${o[@]}" download "$@" >&2)
}

resolve_kernel_pkg() {
  local k
  k=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$k" ] && [ "$(id -u)" = 0 ]; then
    apt_update
    k=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  echo "$k"
}

# vmlinuz (bzImage, XZ payload) -> ELF vmlinux, booted through the PVH entry point: skips the
# real-mode setup and the in-guest XZ decompression (~4 s per boot under TCG). Best effort:
# without python3+lzma or xz the bzImage is booted instead.
extract_vmlinux() {
  local in=$1 out=$2
  if python3 -c 'import lzma' 2>/dev/null; then
    python3 - "$in" "$out.tmp" <<'EOF' && mv "$out.tmp" "$out" && return 0
import lzma, sys
d = open(sys.argv[1], 'rb').read()
off = d.find(b'\xfd7zXZ\x00')            # Debian kernels are CONFIG_KERNEL_XZ
out = lzma.LZMADecompressor().decompress(d[off:])
assert out[:4] == b'\x7fELF'
open(sys.argv[2], 'wb').write(out)
EOF
  fi
  if command -v xz >/dev/null; then
    local off
    off=$(LC_ALL=C grep -abo -m1 "$(printf '\3757zXZ')" "$in" 2>/dev/null | head -1 | cut -d: -f1 || true)
    if [ -n "$off" ]; then
      tail -c +$((off + 1)) "$in" | xz -dc 2>/dev/null > "$out.tmp" || true
      if [ "$(head -c4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then mv "$out.tmp" "$out"; return 0; fi
    fi
  fi
  rm -f "$out.tmp"
  log "warning: could not extract an ELF vmlinux (no python3 lzma / xz); booting the bzImage (~4 s slower)"
}

setup() {
  mkdir -p "$DIR/debs" || die "cannot create the cache directory $DIR (set IPVSVM_DIR)"
  ensure_qemu
  local kpkg=${IPVSVM_KPKG:-}
  # fast path: already set up (resolving via apt-cache costs ~0.9 s per run)
  if [ -z "$kpkg" ] && [ -f "$DIR/kernel/KVER" ] && [ -d "$DIR/extra-root" ]; then
    build_initramfs "$(cat "$DIR/kernel/KVER")"; return 0
  fi
  if [ -z "$kpkg" ]; then
    command -v apt-cache >/dev/null || fatal $E_KERNEL "no apt-cache: cannot resolve the Debian kernel package (set IPVSVM_KPKG and provide apt)"
    # the ABI-versioned package the linux-image-amd64 meta package currently points to
    kpkg=$(resolve_kernel_pkg)
    [ -n "$kpkg" ] || fatal $E_KERNEL "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64 gave nothing; run apt-get update as root, or set IPVSVM_KPKG)"
  fi
  local kver=${kpkg#linux-image-}            # e.g. 6.1.0-57-amd64
  kver=${kver%-unsigned}
  if [ ! -f "$DIR/kernel/boot/vmlinuz-$kver" ] || [ ! -x "$DIR/busybox/bin/busybox" ]; then
    log "downloading $kpkg and busybox-static (apt-get download, ~75 MB) ..."
    apt_download "$kpkg" busybox-static || fatal $E_KERNEL "apt-get download $kpkg busybox-static failed (see above)"
    local kdeb bdeb
    kdeb=$(ls "$DIR"/debs/"${kpkg}"_*.deb 2>/dev/null | tail -1) || true
    bdeb=$(ls "$DIR"/debs/busybox-static_*.deb 2>/dev/null | tail -1) || true
    [ -n "$kdeb" ] && [ -n "$bdeb" ] || fatal $E_KERNEL "downloaded packages not found in $DIR/debs"
    rm -rf "$DIR/kernel" "$DIR/busybox"; mkdir -p "$DIR/kernel" "$DIR/busybox"
    dpkg-deb -x "$kdeb" "$DIR/kernel" || fatal $E_KERNEL "dpkg-deb -x $kdeb failed"
    dpkg-deb -x "$bdeb" "$DIR/busybox" || fatal $E_KERNEL "dpkg-deb -x $bdeb failed"
    [ -f "$DIR/kernel/boot/vmlinuz-$kver" ] || fatal $E_KERNEL "$kdeb holds no boot/vmlinuz-$kver"
    [ -d "$DIR/kernel/lib/modules/$kver/kernel/net/netfilter/ipvs" ] || fatal $E_KERNEL "$kpkg has no IPVS modules"
    rm -f "$DIR/kernel/vmlinux"
  fi
  # Tools IPVS mode needs that the host may lack (ipset): unpacked into $DIR/extra-root and
  # added to the VM only where the host has no file of the same name.
  if [ ! -d "$DIR/extra-root" ]; then
    mkdir -p "$DIR/extra-root.tmp"
    apt_download $EXTRA_PKGS || log "warning: could not download $EXTRA_PKGS"
    local p d; for p in $EXTRA_PKGS; do
      d=$(ls "$DIR"/debs/"${p}"_*.deb 2>/dev/null | tail -1) || true
      [ -n "$d" ] && dpkg-deb -x "$d" "$DIR/extra-root.tmp"
    done
    rm -rf "$DIR/extra-root.tmp/usr/share"; mv "$DIR/extra-root.tmp" "$DIR/extra-root"
  fi
  [ -f "$DIR/kernel/vmlinux" ] || extract_vmlinux "$DIR/kernel/boot/vmlinuz-$kver" "$DIR/kernel/vmlinux"
  echo "$kver" > "$DIR/kernel/KVER"
  build_initramfs "$kver"
}

# copy a dynamically linked binary and its shared libraries (via ldd) into $1
copy_with_libs() {
  local root=$1; shift
  local f lib
  for f in "$@"; do
    [ -e "$f" ] || { log "warning: $f not on host, not bundled"; continue; }
    mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*'); do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
  done
}

# The initramfs is named after a digest of everything that goes into it (the /init script,
# module lists, bundled tools), so checkouts with different runner versions can share $DIR
# without rebuilding each other's (a file-date check would make them take turns).
initramfs_path() {
  local stamp
  stamp=$( { write_init; echo "$MODULES|$MODULE_DIRS|$BUNDLE_NODE|$EXTRA_PKGS|$BUNDLE_BINS"; } | sha256sum | cut -c1-12)
  echo "$DIR/initramfs-$1-$stamp.cpio"
}

build_initramfs() {
  local kver=$1 st="$DIR/initramfs.staging" bb="$DIR/busybox/bin/busybox"
  local kmod="$DIR/kernel/lib/modules/$kver"
  local ird; ird=$(initramfs_path "$kver")
  [ -f "$ird" ] && { touch "$ird"; return 0; }
  local BUNDLE_BINS=$BUNDLE_BINS
  [ "$BUNDLE_NODE" = 1 ] && BUNDLE_BINS="$BUNDLE_BINS $(command -v node)"
  log "building initramfs for $kver ..."
  [ -f "$kmod/modules.dep" ] || "$bb" depmod -b "$DIR/kernel" "$kver"
  rm -rf "$st"; mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,mnt,newroot,ipvsvm,etc,root}
  cp "$bb" "$st/bin/busybox"
  # busybox applet symlinks (don't shadow the real ip/ipvsadm/... bundled below)
  local a
  for a in $("$bb" --list); do [ -e "$st/bin/$a" ] || ln -s busybox "$st/bin/$a"; done
  ln -sf ../bin/busybox "$st/sbin/modprobe"     # /proc/sys/kernel/modprobe default path
  # --- kernel modules: transitive closure over modules.dep ---------------------------
  local want d; want=$( (echo $MODULES; for d in $MODULE_DIRS; do if [ -d "$kmod/$d" ]; then find "$kmod/$d" -name '*.ko*'; fi; done) \
    | tr ' ' '\n' | sed 's#.*/##; s/\.ko.*$//' | tr '-' '_' | sort -u)
  local files
  files=$(awk -v want="$(echo $want)" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) W[w[i]] = 1 }
    { f = $1; sub(/:$/, "", f); name = f; sub(/.*\//, "", name); sub(/\.ko.*$/, "", name)
      gsub(/-/, "_", name); path[name] = f; deps[name] = "" 
      for (i = 2; i <= NF; i++) { d = $i; sub(/.*\//, "", d); sub(/\.ko.*$/, "", d); gsub(/-/, "_", d); deps[name] = deps[name] " " d } }
    END {
      for (m in W) q[++t] = m
      while (t > 0) { m = q[t--]; if (m in seen) continue; seen[m] = 1
        if (!(m in path)) { print "MISSING " m > "/dev/stderr"; continue }
        print path[m]; k = split(deps[m], dd, " "); for (i = 1; i <= k; i++) q[++t] = dd[i] } }' \
    "$kmod/modules.dep")
  local f
  for f in $files; do mkdir -p "$st/lib/modules/$kver/$(dirname "$f")"; cp "$kmod/$f" "$st/lib/modules/$kver/$f"; done
  cp "$kmod/modules.builtin" "$kmod/modules.order" "$st/lib/modules/$kver/"
  [ -f "$kmod/modules.builtin.modinfo" ] && cp "$kmod/modules.builtin.modinfo" "$st/lib/modules/$kver/"
  "$bb" depmod -b "$st" "$kver"                # modules.dep/alias for the subset
  # --- userland tools for IPVSVM_HOSTROOT=0 mode ---------------------------------------
  copy_with_libs "$st" $BUNDLE_BINS
  # /bin/sh = dash: busybox's ash is built with FEATURE_SH_STANDALONE and would run its own
  # "ip"/"nc"/... applets instead of the real tools found in $PATH.
  [ -x "$st/bin/dash" ] && ln -sf dash "$st/bin/sh"
  [ -d /usr/lib/x86_64-linux-gnu/xtables ] && { mkdir -p "$st/usr/lib/x86_64-linux-gnu"; cp -a /usr/lib/x86_64-linux-gnu/xtables "$st/usr/lib/x86_64-linux-gnu/"; }
  # iptables front-ends (Debian default is the nft backend; legacy kept for comparison)
  for a in iptables ip6tables; do
    for s in "" -save -restore; do
      ln -sf xtables-nft-multi "$st/usr/sbin/$a$s"; ln -sf xtables-nft-multi "$st/usr/sbin/$a-nft$s"
      ln -sf xtables-legacy-multi "$st/usr/sbin/$a-legacy$s"
    done
  done
  # libs dlopen()ed by the xtables extensions
  for f in "$st"/usr/lib/x86_64-linux-gnu/xtables/*.so; do copy_with_libs "$st" "${f#$st}" 2>/dev/null || true; done
  if [ -d "$DIR/extra-root" ]; then
    mkdir -p "$st/ipvsvm-extra"; cp -a "$DIR/extra-root/." "$st/ipvsvm-extra/"
    cp -a -n "$DIR/extra-root/." "$st/" 2>/dev/null || true    # initramfs-only mode
  fi
  for f in /etc/protocols /etc/services /etc/ethertypes /etc/nsswitch.conf; do [ -f "$f" ] && cp "$f" "$st$f"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$st/etc/passwd"; echo 'root:x:0:' > "$st/etc/group"
  # --- PID 1 ------------------------------------------------------------------------------
  write_init > "$st/init"; chmod +x "$st/init"
  (cd "$st" && find . | "$bb" cpio -o -H newc 2>/dev/null > "$ird.tmp") || die "cpio of the initramfs failed"
  # (left uncompressed on purpose: gunzip inside a TCG guest costs ~0.7 s per boot)
  mv "$ird.tmp" "$ird"; rm -rf "$st"
  # initramfs files of other runner versions not used for a week (other checkouts share $DIR)
  find "$DIR" -maxdepth 1 -name 'initramfs-*.cpio' -mtime +7 -delete 2>/dev/null || true
  log "initramfs: $(du -h "$ird" | cut -f1)"
}

# The VM's /init (busybox sh). Per-run settings arrive in /ipvsvm/env and the command in
# /ipvsvm/cmd.sh, appended to the initramfs as a second cpio archive.
write_init() {
  cat <<'INIT'
#!/bin/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
. /ipvsvm/env
CON=/dev/ttyS0   # kernel console -> host log file (also carries the exit-status marker)
OUT=/dev/ttyS1   # command stdout/stderr -> host stdout
stty -F $OUT raw -echo 2>/dev/null   # no \n -> \r\n translation
msg() { echo "ipvsvm: $*" > $CON; }
finish() { echo "IPVSVM_RC=$1" > $CON; sync; reboot -f; sleep 5; }   # qemu runs with -no-reboot: reboot = exit (works even with acpi=off)
msg "init start, uptime $(cut -d' ' -f1 /proc/uptime)"
hostname ipvsvm
# busybox modprobe ignores "softdep": libcrc32c (needed by nf_conntrack/ip_vs/nf_tables)
# needs the crc32c crypto driver loaded first. virtio_pci must be loaded by hand (no udev)
# for the 9p and rng devices to appear.
modprobe crc32c_generic; modprobe crc32c_intel 2>/dev/null; modprobe virtio_pci
for m in $IPVSVM_PRELOAD; do modprobe $m || msg "modprobe $m FAILED"; done
ip link set lo up
sysctl -qw kernel.modprobe=/sbin/modprobe 2>/dev/null
msg "modules loaded, uptime $(cut -d' ' -f1 /proc/uptime)"
NINEP="trans=virtio,version=9p2000.L,msize=512000"
ROOT=/
if [ "$IPVSVM_HOSTROOT" = 1 ]; then
  modprobe 9pnet_virtio; modprobe 9p; modprobe overlay
  mkdir -p /mnt/lower /mnt/upper
  if mount -t 9p -o $NINEP,ro,cache=loose hostroot /mnt/lower; then
    mount -t tmpfs -o mode=755 tmpfs /mnt/upper; mkdir -p /mnt/upper/up /mnt/upper/work
    mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/up,workdir=/mnt/upper/work /newroot \
      || { msg "overlay FAILED"; finish 125; }
    ROOT=/newroot
    for d in proc sys dev run tmp; do mkdir -p $ROOT/$d; done
    mount -t proc proc $ROOT/proc; mount -t sysfs sysfs $ROOT/sys
    mount -o rbind /dev $ROOT/dev
    mount -t tmpfs tmpfs $ROOT/run; mount -t tmpfs -o mode=1777 tmpfs $ROOT/tmp
    mkdir -p $ROOT/sys/fs/cgroup; mount -t cgroup2 cgroup2 $ROOT/sys/fs/cgroup 2>/dev/null
    # guest kernel modules + busybox module tools for the command
    mkdir -p $ROOT/lib/modules; mount -o bind /lib/modules $ROOT/lib/modules
    mkdir -p $ROOT/run/ipvsvm/bin; cp /bin/busybox $ROOT/run/ipvsvm/bin/
    # the host root as it is (read-only, page-cached 9p), also where the share is mounted over it:
    # bind subtrees of the share from here to read them through the cached mount
    mkdir -p $ROOT/run/ipvsvm/hostroot; mount -o bind,ro /mnt/lower $ROOT/run/ipvsvm/hostroot
    for a in modprobe insmod rmmod lsmod modinfo depmod; do
      ln -s busybox $ROOT/run/ipvsvm/bin/$a
      # host without kmod: iptables-legacy/ipset/kube-proxy exec /sbin/modprobe
      [ -e $ROOT/sbin/$a ] || [ -L $ROOT/sbin/$a ] || ln -s /run/ipvsvm/bin/busybox $ROOT/sbin/$a
    done
    # bundled Debian packages (ipset, ...) where the host has no such file (overlay only)
    # (file by file: busybox "cp -n" skips whole existing directories)
    [ -d /ipvsvm-extra ] && (cd /ipvsvm-extra && find . ! -type d | while read -r f; do
      [ -e "$ROOT/$f" ] || [ -L "$ROOT/$f" ] || { mkdir -p "$ROOT/${f%/*}"; cp -a "$f" "$ROOT/$f"; }
    done)
  else
    msg "9p mount of host root FAILED - running in the initramfs"
  fi
fi
if [ -n "$IPVSVM_SHARE" ]; then
  modprobe 9pnet_virtio; modprobe 9p
  mkdir -p "$ROOT$IPVSVM_SHARE"
  mount -t 9p -o $NINEP,cache=${IPVSVM_SHARE_CACHE:-mmap} share "$ROOT$IPVSVM_SHARE" || msg "9p mount of share FAILED"
fi
cp /ipvsvm/cmd.sh $ROOT/run/ipvsvm-cmd.sh 2>/dev/null || { mkdir -p $ROOT/run; cp /ipvsvm/cmd.sh $ROOT/run/ipvsvm-cmd.sh; }
msg "running command, uptime $(cut -d' ' -f1 /proc/uptime)"
chroot $ROOT /bin/sh -c '
  export IPVSVM_GUEST=1 HOME=/root TERM=dumb LANG=C.UTF-8 PATH="$PATH:/run/ipvsvm/bin"
  cd "$IPVSVM_CWD" 2>/dev/null || cd /
  exec /bin/sh /run/ipvsvm-cmd.sh' < /dev/null > $OUT 2>&1
rc=$?
# drain ttyS1 before rebooting (stty's tcsetattr uses TCSADRAIN); leftover background
# processes may still hold the tty open, so its final close would not drain it for us
stty -F $OUT raw -echo 2>/dev/null
msg "command done rc=$rc, uptime $(cut -d' ' -f1 /proc/uptime)"
[ -n "$IPVSVM_SHARE" ] && umount "$ROOT$IPVSVM_SHARE" 2>/dev/null
finish $rc
INIT
}

# TCG CPU model: Westmere (x86-64-v2: SSE4.2/POPCNT/AES, no AVX) boots ~0.8 s faster than
# "-cpu max" (fewer SIMD crypto drivers to self-test under emulation) and prints no
# "TCG doesn't support requested feature" warnings. Override with IPVSVM_CPU.
# KVM on this sandbox is a PVM nested hypervisor (kvm_pvm module): stock kernels hang there
# (no output, 100% CPU). Use KVM only where it is real hardware virtualisation.
pick_accel() {
  case "${IPVSVM_ACCEL:-auto}" in
    kvm) echo "-accel kvm -cpu host";;
    tcg) echo "-accel tcg,thread=multi -cpu ${IPVSVM_CPU:-Westmere}";;
    auto)
      if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
        echo "-accel kvm -cpu host"
      else
        echo "-accel tcg,thread=multi -cpu ${IPVSVM_CPU:-Westmere}"
      fi;;
    *) die "bad IPVSVM_ACCEL";;
  esac
}

# ---------------------------------------------------------------------------------------
main() {
  local setup_only=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --setup) setup_only=1; shift;;
      --) shift; break;;
      *) break;;
    esac
  done
  [ "$setup_only" = 1 ] || [ $# -ge 1 ] || die "usage: $0 [--setup] [--] 'command' | -"
  mkdir -p "$DIR" || die "cannot create the cache directory $DIR (set IPVSVM_DIR)"
  local t0; t0=$(date +%s.%N)
  # serialise first-time setup / initramfs rebuilds between concurrent invocations
  command -v flock >/dev/null && command -v timeout >/dev/null || die "flock (util-linux) and timeout (coreutils) are needed"
  ( flock 9; setup ) 9>"$DIR/.setup.lock" || exit $?
  [ "$setup_only" = 1 ] && [ $# -eq 0 ] && { log "setup done ($DIR, kernel $(cat "$DIR/kernel/KVER"))"; return 0; }
  local kver; kver=$(cat "$DIR/kernel/KVER")
  # one VM at a time per cache dir (held by qemu's inherited fd until it exits)
  if [ "${IPVSVM_LOCK:-1}" != 0 ]; then
    exec 8>"$DIR/.vm.lock"
    flock -n 8 || { log "another VM is running (lock $DIR/.vm.lock); waiting for it ..."; flock 8; }
  fi
  # per-run dirs left behind by runs killed with SIGKILL (the EXIT trap removes the others)
  find "$DIR" -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
  run=$(mktemp -d "$DIR/run.XXXXXX")    # global: used by the EXIT trap
  trap 'rm -rf "${run:-}"' EXIT
  # per-run cpio with the command + settings, appended to the base initramfs
  mkdir -p "$run/root/ipvsvm"
  if [ "$1" = - ]; then cat > "$run/root/ipvsvm/cmd.sh"; else printf '%s\n' "$*" > "$run/root/ipvsvm/cmd.sh"; fi
  if [ -n "$SHARE" ]; then
    SHARE=$(cd "$SHARE" && pwd -P) || die "IPVSVM_SHARE: no such directory"
    # the share is writable by root in the VM: never hand out the whole host
    [ "$SHARE" != / ] || die "refusing to share / read-write (run from a project dir or set IPVSVM_SHARE)"
  fi
  {
    printf 'IPVSVM_SHARE=%q\n' "$SHARE"
    printf 'IPVSVM_HOSTROOT=%q\n' "$HOSTROOT"
    printf 'IPVSVM_PRELOAD=%q\n' "$PRELOAD"
    printf 'IPVSVM_SHARE_CACHE=%q\n' "$SHARE_CACHE"
    printf 'export IPVSVM_CWD=%q\n' "$(pwd -P)"
    local v; for v in ${IPVSVM_ENV:-}; do if [ -n "${!v+x}" ]; then printf 'export %s=%q\n' "$v" "${!v}"; fi; done
  } > "$run/root/ipvsvm/env"
  (cd "$run/root" && find . | "$DIR/busybox/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$run/extra.cpio.gz")
  cat "$(initramfs_path "$kver")" "$run/extra.cpio.gz" > "$run/initrd"

  local kernel="$DIR/kernel/vmlinux"; [ -f "$kernel" ] || kernel="$DIR/kernel/boot/vmlinuz-$kver"
  local fsdev=()
  # host "/" read-only; multidevs=remap avoids inode-number clashes across host mounts
  [ "$HOSTROOT" = 1 ] && fsdev+=(-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
                                 -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot)
  # (a "," in a QEMU option value must be doubled)
  [ -n "$SHARE" ] && fsdev+=(-fsdev local,id=share,path="${SHARE//,/,,}",security_model=none,multidevs=remap
                             -device virtio-9p-pci,fsdev=share,mount_tag=share)
  local rc=0
  # ttyS0 = kernel console -> $run/console.log, ttyS1 = command output -> our stdout
  # shellcheck disable=SC2046
  # qemu runs in the background under timeout(1) so that INT/TERM sent to this script can
  # stop it (bash would otherwise defer traps until a foreground child has finished)
  timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -M q35 $(pick_accel) -m "$MEM" -smp "$SMP" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$kernel" -initrd "$run/initrd" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off nokaslr 8250.nr_uarts=2 rdinit=/init ${IPVSVM_APPEND:-}" \
    -serial "file:$run/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
    "${fsdev[@]}" ${IPVSVM_QEMU_ARGS:-} < /dev/null &
  local qpid=$!
  trap 'kill -TERM $qpid 2>/dev/null; exit 130' INT TERM
  wait $qpid || rc=$?
  trap - INT TERM
  [ -n "${IPVSVM_KEEPLOG:-}" ] && cp "$run/console.log" "$IPVSVM_KEEPLOG"
  [ "${IPVSVM_VERBOSE:-0}" = 1 ] && sed 's/\r$//' "$run/console.log" >&2
  # one timing line: host wall time, guest uptime when /init and the command started and ended
  local up; up=$(sed -n 's/.*ipvsvm: \(init start\|running command\|command done rc=[0-9]*\), uptime \([0-9.]*\).*/\2/p' "$run/console.log" | tr '\n' ' ')
  log "wall $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; guest uptime at init/command/done: ${up:-?}"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    log "console log tail:"; tail -20 "$run/console.log" | sed 's/\r$//' >&2
    fatal $E_TIMEOUT "TIMEOUT: the VM ran longer than IPVSVM_TIMEOUT=${TIMEOUT}s"
  fi
  local vmrc; vmrc=$(sed -n 's/^IPVSVM_RC=\([0-9]*\).*/\1/p' "$run/console.log" | tail -1)
  if [ -z "$vmrc" ]; then
    log "console log tail:"; tail -30 "$run/console.log" | sed 's/\r$//' >&2
    fatal $E_VM "the VM ended without the command's exit status (qemu rc=$rc)"
  fi
  return "$vmrc"
}
main "$@"
