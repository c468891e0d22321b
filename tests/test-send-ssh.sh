#!/usr/bin/env bash
# `ferry send vol | ssh host ferry receive /dev/...` through a real OpenSSH server on
# 127.0.0.1 (random port, throwaway keys under $T; ferry found in the session's PATH), both
# directions; a receiver that dies makes send fail with the broken pipe, not hang.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-zst.sh"
requires losetup
start_sshd
SSH=("$T/ssh" -o BatchMode=yes root@127.0.0.1)

make_mixed "$T/src.img" 16
SIZE=$(stat -c %s "$T/src.img")
# The destination a block device, as in `ferry receive /dev/vg/vol`: a loop device.
truncate -s $(((SIZE + 1048575) / 1048576 * 1048576)) "$T/dev.img"
dev=$(losetup --find --show "$T/dev.img")
cleanup "losetup -d $dev"
"$FERRY" send "$T/src.img" | "${SSH[@]}" ferry receive "$dev" >"$T/out" ||
  { cat "$T/sshd.log"; fail "send | ssh receive"; }
cmp -n "$SIZE" "$T/src.img" "$dev" || fail "the device differs from the source"
grep -qF "$("$FERRY" verify --digest "$T/src.img" | cut -d' ' -f1)  $dev" "$T/out" ||
  fail "digest printed by the remote receive: $(cat "$T/out")"
# The other way: the remote sends.
"${SSH[@]}" ferry send "$T/src.img" | "$FERRY" receive -q "$T/back.img"
same_bytes "$T/src.img" "$T/back.img"
# A receiver that refuses (too small) ends the pipe: send reports it and fails.
truncate -s 1M "$T/tiny.img"
rc=0
"$FERRY" send "$T/src.img" 2>"$T/send.err" | "${SSH[@]}" ferry receive "$T/tiny.img" 2>"$T/recv.err" ||
  rc=$?
[ $rc -ne 0 ] || fail "a refused receive looked fine"
grep -qF "smaller than the stream's volume" "$T/recv.err" || fail "receive: $(cat "$T/recv.err")"
"$FERRY" send "$T/src.img" 2>"$T/send.err" | "${SSH[@]}" ferry receive "$T/tiny.img" 2>/dev/null ||
  true
grep -qE "stdout: write after [0-9]+ bytes: Broken pipe" "$T/send.err" ||
  fail "send did not report the closed pipe: $(cat "$T/send.err")"
n=$(grep -c "Accepted publickey for root" "$T/sshd.log" || true)
[ "$n" -ge 5 ] || fail "expected 5 ssh sessions, sshd saw $n"
echo "send | ssh receive ok"
