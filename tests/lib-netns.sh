# Two hosts for tests (source after functions.sh): network namespaces joined by a veth pair.
#
#   netns_setup [RATE]   host A (the source side) and host B (the clone side), each with lo up
#                        and one end of a veth pair: A is $A_ADDR (10.77.0.1), B is $B_ADDR
#                        (10.77.0.2), nothing else; both ends capped with tc tbf at RATE
#                        (default 200mbit).  Names are unique per run; the namespaces, and
#                        every process left in them, are removed at exit, failure or not.
#                        Skips (exit 77) with the reason when namespaces cannot be made.
#   on_a CMD... / on_b CMD...   run CMD in host A / B.
#   link_rate RATE       change the cap on both ends (e.g. 1gbit).
#   link_down / link_up  take the link down / bring it back (both ends).  TCP connections
#                        survive an outage shorter than their retransmission timeout.
#   netns_delay PORT TARGET_PORT DELAY_MS
#                        on host A: listen on $A_ADDR:PORT and forward to 127.0.0.1:TARGET_PORT
#                        with DELAY_MS added in each direction (a round trip costs 2 x DELAY_MS).
#
# Delay and loss: this kernel has no netem qdisc (tbf works).  Delay comes from a small proxy
# of our own, tests/netproxy.c, run on the source host so that every byte between the hosts
# crosses it (the default link of the net tests: netns_delay ... 10 = 20 ms RTT, 200 Mbit/s).
# Loss as a client sees it comes from nbdkit's error filter on the source where a test wants
# request failures, and from link_down (packets silently dropped) for outages.

A_ADDR=10.77.0.1
B_ADDR=10.77.0.2

_rate_burst() {
  # tbf needs a bucket of at least rate/HZ; 4 ms worth (at least 32 KiB) is plenty.
  local rate=$1 n unit bits
  n=${rate%%[a-z]*}
  unit=${rate#"$n"}
  case $unit in
    kbit) bits=$((n * 1000)) ;;
    mbit) bits=$((n * 1000000)) ;;
    gbit) bits=$((n * 1000000000)) ;;
    *) fail "netns: rate '$rate' (use kbit, mbit or gbit)" ;;
  esac
  local b=$((bits / 8 / 250))
  [ "$b" -ge 32768 ] || b=32768
  echo "$b"
}

netns_setup() {
  local rate=${1:-200mbit}
  requires ip tc
  [ "$(id -u)" = 0 ] || skip "two-host link: needs root for network namespaces"
  local tag=$$$RANDOM
  NS_A=ferry-$tag-a
  NS_B=ferry-$tag-b
  VETH_A=fa$tag
  VETH_B=fb$tag
  VETH_A=${VETH_A:0:15}
  VETH_B=${VETH_B:0:15}
  ip netns add "$NS_A" 2>"$T/netns.err" || skip "two-host link: cannot make a network namespace: $(cat "$T/netns.err")"
  cleanup netns_teardown
  ip netns add "$NS_B" 2>"$T/netns.err" || skip "two-host link: cannot make a network namespace: $(cat "$T/netns.err")"
  ip link add "$VETH_A" type veth peer name "$VETH_B" 2>"$T/netns.err" ||
    skip "two-host link: cannot make a veth pair: $(cat "$T/netns.err")"
  ip link set "$VETH_A" netns "$NS_A"
  ip link set "$VETH_B" netns "$NS_B"
  ip -n "$NS_A" addr add "$A_ADDR/24" dev "$VETH_A"
  ip -n "$NS_B" addr add "$B_ADDR/24" dev "$VETH_B"
  ip -n "$NS_A" link set lo up
  ip -n "$NS_B" link set lo up
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
  link_rate "$rate" 2>"$T/netns.err" || skip "two-host link: tc tbf unavailable: $(cat "$T/netns.err")"
  echo "netns: hosts $NS_A ($A_ADDR) and $NS_B ($B_ADDR), $rate"
}

netns_teardown() {
  local ns pid
  for ns in "${NS_B:-}" "${NS_A:-}"; do
    [ -n "$ns" ] || continue
    ip netns list 2>/dev/null | grep -qw "^$ns" || continue
    # Only our own processes can be in our namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
  done
  # A veth pair that never made it into the namespaces (deleting one end removes both).
  [ -z "${VETH_A:-}" ] || ip link del "$VETH_A" 2>/dev/null || true
}

# (In the background, call `ip netns exec "$NS_A" CMD &` directly: `on_a CMD &` forks a
# subshell, and $! would be the subshell's PID, not CMD's.)
on_a() { ip netns exec "$NS_A" "$@"; }
on_b() { ip netns exec "$NS_B" "$@"; }

link_rate() {
  local burst
  burst=$(_rate_burst "$1")
  tc -n "$NS_A" qdisc replace dev "$VETH_A" root tbf rate "$1" burst "$burst" latency 100ms &&
    tc -n "$NS_B" qdisc replace dev "$VETH_B" root tbf rate "$1" burst "$burst" latency 100ms
}

link_down() {
  ip -n "$NS_A" link set "$VETH_A" down
  ip -n "$NS_B" link set "$VETH_B" down
}

link_up() {
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
}

netns_delay() {
  local port=$1 target=$2 ms=$3 pidf="$T/netproxy.$RANDOM.pid"
  ip netns exec "$NS_A" "$NETPROXY" "$A_ADDR:$port" "127.0.0.1:$target" "$ms" "$pidf" \
    2>>"$T/netproxy.log" &
  track_pid $!
  wait_for_pidfile "$pidf" >/dev/null
}

# wait_port HOST_FN ADDR PORT: wait until something listens (a TCP connect succeeds).
wait_port() {
  local fn=$1 addr=$2 port=$3 i
  for ((i = 0; i < 200; i++)); do
    "$fn" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "nothing listens on $addr:$port"
}

# ---- the net tests' standard setup (after lib-tls.sh's make_tls) -----------------------
# net_source FILE [ARGS...]: the source, a read-only ferry-nbd with TLS on host A at
# 127.0.0.1:10810, reached from host B as $SRC_URI through the 10 ms netproxy on
# $A_ADDR:10809 (20 ms RTT).  Call again after killing it to restart it ($SRC_PID).
net_source() {
  local file=$1; shift
  local pidf="$T/source.$RANDOM.pid"
  ip netns exec "$NS_A" "$FERRY_NBD" --foreground --listen 127.0.0.1:10810 --pidfile "$pidf" \
    --tls-certificates "$TLS/server" -r "$@" "$file" 2>>"$T/source.log" &
  SRC_PID=$!
  track_pid "$SRC_PID"
  wait_for_pidfile "$pidf" >/dev/null
  if [ -z "${NET_PROXY_UP:-}" ]; then
    netns_delay 10809 10810 10
    NET_PROXY_UP=1
  fi
  SRC_URI="nbds://$A_ADDR:10809/?tls-certificates=$TLS/client"
}

# net_clone DEST ARGS...: the clone, ferry-nbd on host B serving $T/clone.sock with control
# socket $T/clone.ctl and map $T/clone.map, source $SRC_URI ($CLONE_PID, $CLONE_URI).
net_clone() {
  local dest=$1; shift
  local pidf="$T/clone.pid"
  ip netns exec "$NS_B" "$FERRY_NBD" --foreground --socket "$T/clone.sock" --pidfile "$pidf" \
    --control "$T/clone.ctl" --source "$SRC_URI" --map "$T/clone.map" "$@" "$dest" \
    2>>"$T/clone.log" &
  CLONE_PID=$!
  track_pid "$CLONE_PID"
  wait_for_server "$CLONE_PID" "$pidf" "$T/clone.log" "clone server"
  CLONE_URI="nbd+unix:///?socket=$T/clone.sock"
}

# clone_status FIELD: one field of the clone's status (ferry status --json).
clone_status() {
  "$FERRY" status --json "$T/clone.ctl" | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)[sys.argv[1]]
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

# not_converged WHAT: the scenario must still be under way (else the test proves nothing).
not_converged() {
  [ "$(clone_status state)" != converged ] ||
    fail "$1: the clone converged too early for this test to mean anything"
}
