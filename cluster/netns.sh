#!/usr/bin/env bash
# Test hosts on this machine: K network namespaces ("hosts") joined by a
# bridge that lives in a namespace of its own, so nothing of the machine's own
# network is touched. Host i has the address 198.18.S.i/24 on its eth0
# (198.18.0.0/15 is reserved for network benchmark tests, RFC 2544); S, the
# subnet, comes from the tag so that several sets can exist side by side.
#
#   cluster/netns.sh create  --tag T --hosts K [--rate R]
#                                                  make hosts T-h1 .. T-hK
#   cluster/netns.sh destroy --tag T               remove them (safe to repeat)
#   cluster/netns.sh addr    --tag T --host I      print host I's address
#   cluster/netns.sh subnet  --tag T               print the hosts' subnet (CIDR)
#   cluster/netns.sh link    --tag T --host I up|down
#                                                  plug or unplug host I's cable
#   cluster/netns.sh shape   --tag T --host I|all --rate R|off
#                                                  limit host I's cable to R in
#                                                  each direction (tc tbf: 1gbit,
#                                                  10gbit, 500mbit...), or lift it
#   cluster/netns.sh exec    --tag T --host I -- CMD ...
#                                                  run CMD on host I
# Namespaces are named moe-T-hI (hosts) and moe-T-br (the bridge). Needs root
# (CAP_NET_ADMIN and CAP_SYS_ADMIN). A rate is a token bucket (tbf) on both
# ends of the host's cable, so traffic to and from the host is limited; it
# models a link's bandwidth, not its latency (netem is not available
# everywhere).
set -euo pipefail

die() { echo "netns.sh: $*" >&2; exit 1; }
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

tag="" hosts="" host="" rate="" rest=()
parse() {
    while [ $# -gt 0 ]; do
        case $1 in
            --tag) tag=$2; shift 2 ;;
            --hosts) hosts=$2; shift 2 ;;
            --host) host=$2; shift 2 ;;
            --rate) rate=$2; shift 2 ;;
            --) shift; rest=("$@"); return ;;
            *) rest+=("$1"); shift ;;
        esac
    done
}

ns_host() { echo "moe-$tag-h$1"; }
ns_bridge() { echo "moe-$tag-br"; }
# 0..255 from the tag, so different tags rarely share a subnet.
subnet_index() { printf '%s' "$tag" | cksum | awk '{print $1 % 250 + 1}'; }
addr_of() { echo "198.18.$(subnet_index).$1"; }

cmd_create() {
    [[ "$tag" =~ ^[a-zA-Z0-9]{1,12}$ ]] || die "--tag must be 1-12 letters or digits"
    [[ "$hosts" =~ ^[1-9][0-9]?$ ]] && [ "$hosts" -le 60 ] || die "--hosts must be 1..60"
    local br i h
    br=$(ns_bridge)
    ip netns add "$br" || die "cannot create network namespaces here (ip netns add failed)"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for i in $(seq 1 "$hosts"); do
        h=$(ns_host "$i")
        ip netns add "$h"
        ip -n "$h" link set lo up
        ip -n "$br" link add "vh$i" type veth peer name eth0 netns "$h"
        ip -n "$br" link set "vh$i" master br0
        ip -n "$br" link set "vh$i" up
        ip -n "$h" addr add "$(addr_of "$i")/24" dev eth0
        ip -n "$h" link set eth0 up
    done
    echo "netns.sh: $hosts host(s) $(ns_host 1)..$(ns_host "$hosts") on 198.18.$(subnet_index).0/24"
    if [ -n "$rate" ]; then
        for i in $(seq 1 "$hosts"); do shape_host "$i"; done
        echo "netns.sh: every cable limited to $rate each way"
    fi
}

# The rate in bits/s from tc's notation (1gbit, 500mbit, 10gbit, 100kbit).
rate_bits() {
    [[ "$rate" =~ ^([1-9][0-9]{0,5})(k|m|g)?bit$ ]] ||
        die "--rate must be like 100mbit, 1gbit or 10gbit, or off (got '$rate')"
    local n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
    case $unit in k) echo $((n * 1000)) ;; m) echo $((n * 1000000)) ;;
                  g) echo $((n * 1000000000)) ;; *) echo "$n" ;; esac
}

# A token bucket on both ends of host $1's cable, or none with --rate off.
# The bucket holds 1 ms of the rate (at least 64 KiB): a smaller one loses
# throughput to the kernel's timer granularity (16 KiB sustained 0.73 of
# 1 Gbit/s, 64 KiB 0.92, 128 KiB 0.95), a larger one lets bigger bursts
# through at full speed. So a message of a few KiB is not slowed (on a real
# link it would take microseconds) and a prefill batch is. The queue holds
# 50 ms before it drops, like a switch port's buffer.
shape_host() {
    local i=$1 br h
    br=$(ns_bridge) h=$(ns_host "$i")
    ip netns exec "$h" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "$br" tc qdisc del dev "vh$i" root 2>/dev/null || true
    [ "$rate" = off ] && return 0
    local bits burst
    bits=$(rate_bits)
    burst=$((bits / 8 / 1000))
    [ "$burst" -ge 65536 ] || burst=65536
    ip netns exec "$h" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms ||
        die "tc tbf failed on $h (is the sch_tbf module available?)"
    ip netns exec "$br" tc qdisc add dev "vh$i" root tbf rate "$rate" burst "$burst" latency 50ms ||
        die "tc tbf failed on $br"
}

cmd_shape() {
    [ -n "$rate" ] || die "shape needs --rate R or --rate off"
    [ "$rate" = off ] || rate_bits >/dev/null
    local i
    if [ "$host" = all ]; then
        for i in $(ip netns list | awk '{print $1}' | sed -n "s/^moe-$tag-h\([0-9]*\)$/\1/p"); do
            shape_host "$i"
        done
    else
        ip netns list | awk '{print $1}' | grep -qx "$(ns_host "$host")" ||
            die "no host $host in set '$tag'"
        shape_host "$host"
    fi
}

cmd_destroy() {
    [ -n "$tag" ] || die "destroy needs --tag"
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^moe-$tag-(h[0-9]+|br)$" || true); do
        # End what still runs in the namespace, then remove it.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}

cmd_link() {
    local state=${rest[0]:-}
    [ "$state" = up ] || [ "$state" = down ] || die "link needs up or down"
    ip -n "$(ns_bridge)" link set "vh$host" "$state"
}

[ $# -gt 0 ] || usage
command=$1
shift
parse "$@"
case $command in
    create) cmd_create ;;
    destroy) cmd_destroy ;;
    addr) [ -n "$host" ] || die "addr needs --host"; addr_of "$host" ;;
    subnet) echo "198.18.$(subnet_index).0/24" ;;
    link) [ -n "$host" ] || die "link needs --host"; cmd_link ;;
    shape) [ -n "$host" ] || die "shape needs --host I or --host all"; cmd_shape ;;
    exec) [ -n "$host" ] || die "exec needs --host"; exec ip netns exec "$(ns_host "$host")" "${rest[@]}" ;;
    -h|--help) usage ;;
    *) die "unknown command '$command'" ;;
esac
