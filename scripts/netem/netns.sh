#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, and the faults to put on the link.
# Used by tests/netem/netem_test.ts; also handy by hand (as root):
#
#   bash scripts/netem/netns.sh up ferry-netem-demo
#   bash scripts/netem/netns.sh exec ferry-netem-demo a bun server.ts --host 10.203.0.1 --dir /tmp/inbox
#   bash scripts/netem/netns.sh qdisc ferry-netem-demo b netem delay 100ms 20ms
#   bash scripts/netem/netns.sh exec ferry-netem-demo b bun send.ts big.iso 10.203.0.1:9000
#   bash scripts/netem/netns.sh down ferry-netem-demo
#
# Topology for NAME: namespace NAME-a holds veth "fy0" with 10.203.0.1/30 (the server side),
# namespace NAME-b holds "fy1" with 10.203.0.2/30 (the sender side). The veth is created
# directly inside the namespaces, so nothing appears in the root namespace, and these
# addresses exist only there: traffic never leaves the pair. Neither namespace has a
# default route.
#
# Commands (SIDE is a or b):
#   caps                     print "netem=yes|no tbf=yes|no nft=yes|no tun=yes|no netns=yes|no"
#                            (probes a scratch namespace)
#   up NAME                  create the pair; caps TCP buffers in both (FERRY_NETEM_TCP_BUF, default 1048576)
#   down NAME                delete both namespaces (and so the veth); never fails
#   sweep                    delete ferry-netem-<pid>-* namespaces whose creating process is gone
#   exec NAME SIDE CMD...    run CMD inside a namespace
#   qdisc NAME SIDE ARGS...  `tc qdisc replace dev <veth> root ARGS` (netem …, tbf …)
#   qdisc-clear NAME SIDE    remove the root qdisc
#   nft-loss NAME SIDE PCT   drop PCT% of the packets arriving at SIDE (nftables; 100 = a blackhole).
#                            Dropped on arrival, not on the way out: a local output drop is reported
#                            to the sender's TCP at once, which is nothing like loss on a wire.
#   nft-dup NAME SIDE PCT    duplicate PCT% of the packets leaving SIDE (nftables)
#   nft-clear NAME SIDE      remove ferry's nftables rules
#   nft-count NAME SIDE      print how many packets ferry's rule dropped or duplicated at SIDE
#   tcp-stats NAME SIDE      print "RetransSegs N" and "InSegs N" of the namespace's TCP
#   link NAME SIDE up|down   take the veth end down or bring it back (addresses are kept)
#   shaper NAME ARGS...      run scripts/netem/tun_shaper.py (userspace delay/reordering for kernels
#                            without sch_netem): TUN "fyta" in NAME-a, "fytb" in NAME-b, joined by
#                            the shaper; prints "ready …", runs until killed or stdin closes
#   shaper-routes NAME       once the shaper is ready: bring fyta/fytb up and route the peer's /32
#                            through them, so all traffic between the two addresses goes through
#                            the shaper instead of the veth (the routes vanish with the shaper)
set -euo pipefail

ADDR_A=10.203.0.1
ADDR_B=10.203.0.2

die() {
  echo "netns.sh: $*" >&2
  exit 2
}
ns_of() { echo "$1-$2"; }
dev_of() { [[ "$1" == a ]] && echo fy0 || echo fy1; }
peer_addr_of() { [[ "$1" == a ]] && echo "$ADDR_B" || echo "$ADDR_A"; }
check_side() { [[ "${1:-}" == a || "${1:-}" == b ]] || die "SIDE must be a or b, got '${1:-}'"; }

cmd="${1:-}"
shift || true
case "$cmd" in
  caps)
    probe="ferry-netem-$$-probe"
    ip netns add "$probe" 2>/dev/null || {
      echo "netem=no tbf=no nft=no tun=no netns=no"
      exit 0
    }
    trap 'ip netns del "$probe" 2>/dev/null || true' EXIT
    ip -n "$probe" link set lo up
    netem=no tbf=no nft=no
    ip netns exec "$probe" tc qdisc add dev lo root netem delay 1ms 2>/dev/null && netem=yes
    ip netns exec "$probe" tc qdisc del dev lo root 2>/dev/null || true
    ip netns exec "$probe" tc qdisc add dev lo root tbf rate 1mbit burst 32kbit latency 100ms 2>/dev/null && tbf=yes
    if command -v nft >/dev/null 2>&1 &&
      ip netns exec "$probe" nft add table ip ferryprobe 2>/dev/null; then
      nft=yes
    fi
    # The userspace shaper (tun_shaper.py) needs a working TUN device and python3.
    tun=no
    if command -v python3 >/dev/null 2>&1 && [[ -c /dev/net/tun ]] &&
      ip -n "$probe" tuntap add dev fyprobe mode tun 2>/dev/null; then
      tun=yes
    fi
    echo "netem=$netem tbf=$tbf nft=$nft tun=$tun netns=yes"
    ;;
  up)
    name="${1:?up NAME}"
    a="$(ns_of "$name" a)"
    b="$(ns_of "$name" b)"
    ip netns add "$a"
    ip netns add "$b" || {
      ip netns del "$a"
      exit 1
    }
    if ! ip link add fy0 netns "$a" type veth peer name fy1 netns "$b"; then
      ip netns del "$a"
      ip netns del "$b"
      exit 1
    fi
    buf="${FERRY_NETEM_TCP_BUF:-1048576}"
    for side in a b; do
      ns="$(ns_of "$name" "$side")"
      dev="$(dev_of "$side")"
      addr="$([[ $side == a ]] && echo "$ADDR_A" || echo "$ADDR_B")"
      ip -n "$ns" link set lo up
      ip -n "$ns" addr add "$addr/30" dev "$dev"
      ip -n "$ns" link set "$dev" up
      # One TCP segment per packet (no 64 KB GSO bundles), so a dropped or duplicated
      # packet is one segment, as on a real wire.
      ip -n "$ns" link set "$dev" gso_max_segs 1 2>/dev/null ||
        echo "netns.sh: warning: cannot set gso_max_segs on $dev (old iproute2?)" >&2
      # Per-namespace TCP buffer caps bound the bytes in flight (see tests/netem/netem_test.ts).
      ip netns exec "$ns" sysctl -q -w "net.ipv4.tcp_wmem=4096 65536 $buf" "net.ipv4.tcp_rmem=4096 131072 $buf"
    done
    ;;
  down)
    name="${1:?down NAME}"
    ip netns del "$(ns_of "$name" a)" 2>/dev/null || true
    ip netns del "$(ns_of "$name" b)" 2>/dev/null || true
    ;;
  sweep)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ferry-netem-[0-9]+-' || true); do
      pid="$(sed -E 's/^ferry-netem-([0-9]+)-.*/\1/' <<<"$ns")"
      if ! kill -0 "$pid" 2>/dev/null; then
        ip netns del "$ns" 2>/dev/null || true
      fi
    done
    ;;
  exec)
    name="${1:?exec NAME SIDE CMD...}"
    check_side "${2:-}"
    ns="$(ns_of "$name" "$2")"
    shift 2
    exec ip netns exec "$ns" "$@"
    ;;
  qdisc)
    name="${1:?qdisc NAME SIDE ARGS...}"
    check_side "${2:-}"
    ns="$(ns_of "$name" "$2")"
    dev="$(dev_of "$2")"
    shift 2
    ip netns exec "$ns" tc qdisc replace dev "$dev" root "$@"
    ;;
  qdisc-clear)
    name="${1:?qdisc-clear NAME SIDE}"
    check_side "${2:-}"
    ip netns exec "$(ns_of "$name" "$2")" tc qdisc del dev "$(dev_of "$2")" root 2>/dev/null || true
    ;;
  nft-loss | nft-dup)
    name="${1:?$cmd NAME SIDE PCT}"
    check_side "${2:-}"
    pct="${3:?$cmd NAME SIDE PCT}"
    [[ "$pct" =~ ^[0-9]+$ && "$pct" -le 100 ]] || die "PCT must be 0..100, got '$pct'"
    ns="$(ns_of "$name" "$2")"
    dev="$(dev_of "$2")"
    if [[ "$cmd" == nft-loss ]]; then
      hook="prerouting priority -300"
      rule="iifname \"$dev\" $([[ "$pct" == 100 ]] || echo "numgen random mod 100 < $pct") counter drop"
    else
      # The copy goes to the peer's address on the same link: the receiver sees the packet twice.
      hook="postrouting priority 0"
      rule="oifname \"$dev\" numgen random mod 100 < $pct counter dup to $(peer_addr_of "$2") device \"$dev\""
    fi
    ip netns exec "$ns" nft -f - <<EOF
table ip ferry
delete table ip ferry
table ip ferry {
  chain fault {
    type filter hook $hook; policy accept;
    $rule
  }
}
EOF
    ;;
  nft-clear)
    name="${1:?nft-clear NAME SIDE}"
    check_side "${2:-}"
    ip netns exec "$(ns_of "$name" "$2")" nft delete table ip ferry 2>/dev/null || true
    ;;
  nft-count)
    name="${1:?nft-count NAME SIDE}"
    check_side "${2:-}"
    { ip netns exec "$(ns_of "$name" "$2")" nft list table ip ferry 2>/dev/null || true; } |
      sed -nE 's/.*counter packets ([0-9]+).*/\1/p' | head -n 1 | grep . || echo 0
    ;;
  tcp-stats)
    name="${1:?tcp-stats NAME SIDE}"
    check_side "${2:-}"
    ip netns exec "$(ns_of "$name" "$2")" cat /proc/net/snmp |
      awk '$1 == "Tcp:" { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else for (i = 2; i <= NF; i++) v[k[i]] = $i }
           END { print "RetransSegs", v["RetransSegs"]; print "InSegs", v["InSegs"] }'
    ;;
  link)
    name="${1:?link NAME SIDE up|down}"
    check_side "${2:-}"
    [[ "${3:-}" == up || "${3:-}" == down ]] || die "link state must be up or down"
    ip -n "$(ns_of "$name" "$2")" link set "$(dev_of "$2")" "$3"
    ;;
  shaper)
    name="${1:?shaper NAME ARGS...}"
    shift
    exec ip netns exec "$(ns_of "$name" a)" python3 "$(dirname "${BASH_SOURCE[0]}")/tun_shaper.py" \
      --dev-a fyta --dev-b fytb --netns-b "/run/netns/$(ns_of "$name" b)" "$@"
    ;;
  shaper-routes)
    name="${1:?shaper-routes NAME}"
    for side in a b; do
      ns="$(ns_of "$name" "$side")"
      dev="$([[ $side == a ]] && echo fyta || echo fytb)"
      ip netns exec "$ns" sysctl -q -w "net.ipv4.conf.$dev.rp_filter=0"
      ip -n "$ns" link set "$dev" up
      ip -n "$ns" route replace "$(peer_addr_of "$side")/32" dev "$dev" \
        src "$([[ $side == a ]] && echo "$ADDR_A" || echo "$ADDR_B")"
    done
    ;;
  *)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    [[ -z "$cmd" || "$cmd" == -h || "$cmd" == --help ]] && exit 0
    exit 2
    ;;
esac
