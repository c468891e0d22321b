#!/usr/bin/env bash
# The starvation and handshake scenarios of test-nbd-fairness.py on the two-host link
# (20 ms RTT, 200 Mbit/s, TLS required): 128 silent connections, a connection cut by
# --handshake-timeout, 40 connections pipelining 32 MiB reads without reading replies; each
# time a new client's 4 KiB read succeeds (the bound and how it is asserted: see the .py).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tls.sh"
. "$TESTS_DIR/lib-netns.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"
netns_setup 200mbit
make_tls
head -c 1M /dev/urandom >"$T/img"
truncate -s 64M "$T/img"
net_source "$T/img" --max-clients 128 --handshake-timeout 3 --buffer-memory 512M
FAIRNESS_TCP=$A_ADDR:10809 FAIRNESS_URI=$SRC_URI FAIRNESS_TLS=$TLS/client \
  FAIRNESS_LOG=$T/source.log FAIRNESS_IMAGE=$T/img \
  on_b /usr/bin/python3 "$TESTS_DIR/test-nbd-fairness.py"
kill -0 "$SRC_PID" || fail "the server died: $(cat "$T/source.log")"
