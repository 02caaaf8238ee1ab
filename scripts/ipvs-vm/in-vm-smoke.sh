#!/bin/sh
# Runs INSIDE the IPVS VM (scripts/ipvs-vm/run.sh 'sh scripts/ipvs-vm/in-vm-smoke.sh'): checks that
# the kernel has IPVS and that real TCP goes through an IPVS virtual server the way kube-proxy's
# IPVS mode sets one up: the VIP on a dummy interface (kube-ipvs0), a round-robin NAT ("masq")
# service, two real servers in their own network namespaces, a client in a third one.
# Last line: "IPVS-SMOKE: PASS ..." (exit 0) or "IPVS-SMOKE: FAIL: why" (exit 1).
set -u
fail() {
  echo "IPVS-SMOKE: FAIL: $*"
  exit 1
}
[ "${IPVSVM_GUEST:-}" = 1 ] || fail "not inside the IPVS VM (run it through scripts/ipvs-vm/run.sh)"
BB=$(command -v busybox || echo /run/ipvsvm/bin/busybox)
[ -x "$BB" ] || fail "no busybox (for httpd/nc)"
command -v ipvsadm >/dev/null || fail "ipvsadm is not installed on the host (apt-get install ipvsadm)"
VIP=10.96.0.10

modprobe ip_vs && modprobe ip_vs_rr || fail "modprobe ip_vs failed"
[ -r /proc/net/ip_vs ] || fail "no /proc/net/ip_vs after modprobe ip_vs"
echo "kernel $(uname -r): $(head -1 /proc/net/ip_vs)"
sysctl -qw net.ipv4.ip_forward=1 || fail "sysctl ip_forward"
sysctl -qw net.ipv4.vs.conntrack=1 || fail "sysctl net.ipv4.vs.conntrack (the ip_vs sysctls are missing)"

# The VIP lives on a dummy interface, as in kube-proxy's IPVS mode.
ip link add kube-ipvs0 type dummy || fail "cannot create a dummy interface"
ip addr add $VIP/32 dev kube-ipvs0 && ip link set kube-ipvs0 up || fail "cannot configure kube-ipvs0"

# Two real servers, each in its own namespace behind a veth pair, serving HTTP on 8080.
for i in 1 2; do
  ip netns add rs$i || fail "ip netns add rs$i"
  ip link add vrs$i type veth peer name eth0 netns rs$i || fail "veth for rs$i"
  ip addr add 10.0.$i.1/24 dev vrs$i && ip link set vrs$i up
  ip -n rs$i addr add 10.0.$i.2/24 dev eth0 && ip -n rs$i link set eth0 up && ip -n rs$i link set lo up
  ip -n rs$i route add default via 10.0.$i.1 || fail "routes for rs$i"
  mkdir -p /tmp/www$i && echo "real-server-$i" >/tmp/www$i/index.html
  ip netns exec rs$i "$BB" httpd -p 8080 -h /tmp/www$i || fail "httpd in rs$i"
done
# A client namespace (another pod / an outside client).
ip netns add client || fail "ip netns add client"
ip link add vcli type veth peer name eth0 netns client || fail "veth for client"
ip addr add 192.168.50.1/24 dev vcli && ip link set vcli up
ip -n client addr add 192.168.50.2/24 dev eth0 && ip -n client link set eth0 up
ip -n client route add default via 192.168.50.1 || fail "routes for client"

# The virtual server: round robin, NAT forwarding (what kube-proxy uses).
ipvsadm -A -t $VIP:80 -s rr || fail "ipvsadm -A"
ipvsadm -a -t $VIP:80 -r 10.0.1.2:8080 -m || fail "ipvsadm -a rs1"
ipvsadm -a -t $VIP:80 -r 10.0.2.2:8080 -m || fail "ipvsadm -a rs2"
ipvsadm -Ln

get() { # one HTTP/1.0 request (one TCP connection) from namespace $1 to the VIP; prints the body's last line
  if command -v curl >/dev/null; then
    ip netns exec "$1" curl -sS -m 5 "http://$VIP/"
  else
    printf 'GET / HTTP/1.0\r\n\r\n' | ip netns exec "$1" "$BB" nc -w 5 $VIP 80 | tail -1
  fi
}
n1=0 n2=0
for n in 1 2 3 4 5 6; do
  body=$(get client) || fail "request $n from the client namespace to $VIP:80 failed"
  echo "request $n -> $body"
  case "$body" in
    real-server-1) n1=$((n1 + 1)) ;;
    real-server-2) n2=$((n2 + 1)) ;;
    *) fail "request $n: unexpected answer '$body'" ;;
  esac
done
ipvsadm -Lnc | head -8
[ $n1 = 3 ] && [ $n2 = 3 ] || fail "round robin over 2 real servers: expected 3+3 answers, got $n1+$n2"
conns=$(ipvsadm -Lnc | grep -c "$VIP:80")
[ "$conns" -ge 6 ] || fail "IPVS connection table has $conns entries for $VIP:80, expected >= 6"
echo "IPVS-SMOKE: PASS (kernel $(uname -r), rr NAT $VIP:80 -> 2 real servers in netns, 6 TCP connections: $n1+$n2)"
