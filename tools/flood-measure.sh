#!/usr/bin/env bash
# Measures a spoofed SYN flood against the director in a throw-away namespace lab (the integration tests'
# layout: client, director with 2 queues, 2 real servers on a bridge, DR): the director's RSS before and
# after, its counters, and how many real HTTP requests (one connection each) succeed before, during and after.
# Usage (root): tools/flood-measure.sh [--connections N] [--count SYNS] [--rate PPS] [--binary PATH]
set -euo pipefail

binary=.build/release/xdirector connections="" count=1000000 rate=0
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        *) echo "usage: $0 [--connections N] [--count SYNS] [--rate PPS] [--binary PATH]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
binary=$(realpath "$binary")

p="xf$$"
cl=$p-cl dir=$p-dir sw=$p-sw
vip=203.0.113.10
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in $cl $dir $sw $p-rs1 $p-rs2; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

for ns in $cl $dir $sw $p-rs1 $p-rs2; do ip netns add "$ns"; done
ip -n $sw link add br0 type bridge mcast_snooping 0
ip -n $sw link set br0 up
attach() {  # namespace, bridge port, inside name, queues
    ip -n $sw link add "$2" numrxqueues "$4" numtxqueues "$4" type veth peer name "$3" numrxqueues "$4" numtxqueues "$4" netns "$1"
    ip -n $sw link set "$2" master br0 up
    ip -n "$1" link set "$3" up
}
attach $cl ${p}c ${p}c0 1
ip -n $cl addr add 198.51.100.1/24 dev ${p}c0
ip -n $cl route add $vip/32 via 198.51.100.2
ip netns exec $cl ethtool -K ${p}c0 tx off tso off gso off >/dev/null
attach $dir ${p}d ${p}d0 2
ip -n $dir addr add 198.51.100.2/24 dev ${p}d0
ip -n $dir addr add $vip/32 dev lo
for i in 1 2; do
    attach $p-rs$i ${p}p$i ${p}r$i 1
    ip -n $p-rs$i addr add 198.51.100.1$i/24 dev ${p}r$i
    ip netns exec $p-rs$i sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    ip -n $p-rs$i addr add $vip/32 dev lo
    ip netns exec $p-rs$i "$binary" backend-http --name rs$i --port 80 >/dev/null 2>&1 &
    pids+=($!)
done

cat > "$work/rules" <<EOF
-A -t $vip:80 -s rr
-a -t $vip:80 -r 198.51.100.11:80 -g -w 1
-a -t $vip:80 -r 198.51.100.12:80 -g -w 1
EOF
ip netns exec $dir "$binary" run --interface ${p}d0 --rules "$work/rules" --socket "$work/sock" \
    --state-file "$work/state" ${connections:+--connections $connections} >"$work/director.log" 2>&1 &
director=$!
pids+=($director)
for _ in $(seq 300); do grep -q ready "$work/director.log" && break; sleep 0.1; done
grep -q ready "$work/director.log" || { cat "$work/director.log"; exit 1; }

rss() { awk '/VmRSS/ { print $2 " kB" }' /proc/$director/status; }
requests() {  # count: prints "ok/count"
    local ok=0
    for _ in $(seq "$1"); do
        [ -n "$(ip netns exec $cl curl -s -m 2 http://$vip/)" ] && ok=$((ok + 1))
    done
    echo "$ok/$1"
}
counters() {
    "$binary" stats --socket "$work/sock" --json | python3 -c '
import json, sys
s = json.load(sys.stdin); t = s["totals"]
names = ["rx_packets", "tx_packets", "new_connections", "connection_table_full", "half_open_evicted",
         "mid_flow_connections", "active_connections", "drop_tcp_without_connection", "drop_socket_rx_ring_full",
         "drop_socket_rx", "drop_tx_ring_full"]
print("  " + ", ".join(f"{n}={t.get(n)}" for n in names))
print("  xdp: " + ", ".join(f"{k}={v}" for k, v in s.get("xdp", {}).items()))'
}

echo "table: ${connections:-default} connections per worker, 2 workers; flood: $count SYNs, rate ${rate:-0} (0: unpaced)"
echo "RSS before: $(rss)"
echo "requests before: $(requests 20)"
gateway=$(ip netns exec $dir cat /sys/class/net/${p}d0/address)
ip netns exec $cl "$binary" syn-flood --interface ${p}c0 --gateway-mac "$gateway" --address $vip --port 80 \
    --count "$count" --rate "$rate" >"$work/flood.json" &
flood=$!
pids+=($flood)
during=0 during_ok=0
while kill -0 $flood 2>/dev/null; do
    [ -n "$(ip netns exec $cl curl -s -m 2 http://$vip/)" ] && during_ok=$((during_ok + 1))
    during=$((during + 1))
done
wait $flood || true
echo "flood: $(cat "$work/flood.json")"
echo "requests during: $during_ok/$during"
sleep 1
echo "counters after the flood:"
counters
echo "RSS after: $(rss)"
echo "requests after: $(requests 20)"
