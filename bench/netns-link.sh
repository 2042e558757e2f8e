#!/usr/bin/env bash
# A kernel-shaped link for the daemons: two network namespaces joined by a veth pair,
# each direction rate-limited by `tc tbf`. This kernel has no netem, so delay stays in
# user space (kvstream-edge --one_way_delay_ms). Needs root. Only the namespaces'
# own addresses (10.77.0.1 edge side, 10.77.0.2 cloud side) are used.
#
#   bench/netns-link.sh up RATE_MBIT   create kvs-edge and kvs-cloud, shape both directions
#   bench/netns-link.sh rate RATE_MBIT change the rate
#   bench/netns-link.sh exec edge|cloud CMD [ARGS...]   run a command inside a namespace
#   bench/netns-link.sh status         show the qdiscs
#   bench/netns-link.sh down           remove both namespaces
#
# Example:
#   bench/netns-link.sh up 10
#   bench/netns-link.sh exec cloud build/bin/kvstream-cloud --model=scout=testdata/models-2k/scout \
#       --listen=10.77.0.2:50052 --metrics_address= &
#   bench/netns-link.sh exec edge build/bin/kvstream-edge --scout=testdata/models-2k/scout \
#       --cloud=10.77.0.2:50052 --listen=10.77.0.1:50051 --metrics_address= &
#   bench/netns-link.sh exec edge build/bin/kvstream ask --edge=10.77.0.1:50051 ...
set -euo pipefail
EDGE=kvs-edge
CLOUD=kvs-cloud

shape() {  # shape NS DEV RATE_MBIT
  local burst=$(( $3 * 1000000 / 8 / 100 ))  # 10 ms worth of bytes, at least one MTU
  (( burst < 16000 )) && burst=16000
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "${3}mbit" burst "$burst" latency 200ms
}

case "${1:-}" in
  up)
    rate=${2:?usage: $0 up RATE_MBIT}
    ip netns add "$EDGE"
    ip netns add "$CLOUD"
    ip link add kvs-e type veth peer name kvs-c
    ip link set kvs-e netns "$EDGE"
    ip link set kvs-c netns "$CLOUD"
    ip netns exec "$EDGE" ip addr add 10.77.0.1/24 dev kvs-e
    ip netns exec "$CLOUD" ip addr add 10.77.0.2/24 dev kvs-c
    for ns in "$EDGE" "$CLOUD"; do ip netns exec "$ns" ip link set lo up; done
    ip netns exec "$EDGE" ip link set kvs-e up
    ip netns exec "$CLOUD" ip link set kvs-c up
    shape "$EDGE" kvs-e "$rate"
    shape "$CLOUD" kvs-c "$rate"
    echo "link up: $EDGE 10.77.0.1 <-> $CLOUD 10.77.0.2 at ${rate} Mbit/s each way"
    ;;
  rate)
    rate=${2:?usage: $0 rate RATE_MBIT}
    shape "$EDGE" kvs-e "$rate"
    shape "$CLOUD" kvs-c "$rate"
    ;;
  exec)
    side=${2:?usage: $0 exec edge|cloud CMD...}
    shift 2
    case "$side" in edge) ns=$EDGE ;; cloud) ns=$CLOUD ;; *) echo "expected edge or cloud, found '$side'" >&2; exit 2 ;; esac
    exec ip netns exec "$ns" "$@"
    ;;
  status)
    ip netns exec "$EDGE" tc -s qdisc show dev kvs-e
    ip netns exec "$CLOUD" tc -s qdisc show dev kvs-c
    ;;
  down)
    ip netns del "$EDGE" 2>/dev/null || true
    ip netns del "$CLOUD" 2>/dev/null || true
    ;;
  *)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
