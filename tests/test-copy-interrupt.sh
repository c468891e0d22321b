#!/usr/bin/env bash
# ferry copy stopped by SIGTERM / SIGINT mid-copy: exit 1 with a message, the destination it
# created removed (never a half-copied image left looking like a good one), an existing
# destination left in place.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"

head -c $((16 << 20)) /dev/urandom >"$T/src.img"

# interrupt SIGNAL DST: start a slow copy (--rate), wait until it is copying (its debug line
# says so), signal it.
interrupt() {
  local sig=$1 dst=$2 rc=0
  : >"$T/err"
  FERRY_DEBUG=copy "$FERRY" copy --rate 2M/s --request-size 256K --requests 2 "$T/src.img" \
    "$dst" 2>"$T/err" &
  local pid=$!
  track_pid $pid
  for _ in $(seq 200); do
    grep -q "debug: copy: .* workers" "$T/err" && break
    sleep 0.05
  done
  kill -"$sig" $pid
  wait $pid || rc=$?
  cat "$T/err"
  [ $rc -eq 1 ] || fail "SIG$sig: exit $rc, want 1"
  grep -qF "$dst: copy interrupted by SIG$sig" "$T/err" || fail "SIG$sig: no message"
}

interrupt TERM "$T/out.img"
grep -qF "removed the incomplete $T/out.img" "$T/err" || fail "no word about the removal"
[ ! -e "$T/out.img" ] || fail "SIGTERM left out.img"

interrupt INT "$T/out2.img"
[ ! -e "$T/out2.img" ] || fail "SIGINT left out2.img"

# An existing destination is not ours to remove.
head -c $((16 << 20)) /dev/zero >"$T/existing.img"
interrupt TERM "$T/existing.img"
[ -e "$T/existing.img" ] || fail "existing destination removed"
echo "interrupt ok"
