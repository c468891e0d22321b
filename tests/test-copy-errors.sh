#!/usr/bin/env bash
# ferry copy when the source fails: refused connections, a source that always fails reads
# (clear message naming the source and offset, a destination it created removed), and one
# failing 10% of reads (retried to a correct copy, or a clear failure: never a wrong copy).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"
requires nbdkit

# Refused connections: nothing created.
expect_rc 1 "nbd+unix:///?socket=$T/nosuch.sock" "$FERRY" copy "nbd+unix:///?socket=$T/nosuch.sock" "$T/out.img"
[ ! -e "$T/out.img" ] || fail "refused unix connection created out.img"
port=$(free_port)
expect_rc 1 "nbd://127.0.0.1:$port/" "$FERRY" copy "nbd://127.0.0.1:$port/" "$T/out.img"
[ ! -e "$T/out.img" ] || fail "refused tcp connection created out.img"

make_image "$T/src.img" 16
size=$(stat -c %s "$T/src.img")

# Every read fails: a clear message, the new destination removed again.
start_nbdkit "$T/bad.sock" --readonly --filter=error file "$T/src.img" error-pread-rate=100% error-pread=EIO
rc=0
"$FERRY" copy --request-size 1M "nbd+unix:///?socket=$T/bad.sock" "$T/out.img" 2>"$T/err" || rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "always-failing source: exit $rc, want 1"
grep -qE "nbd\+unix:///\?socket=$T/bad.sock: reading [0-9]+ bytes at offset [0-9]+ failed after 6 attempts" "$T/err" ||
  fail "message does not name the source, offset and attempts"
grep -qF "removed the incomplete $T/out.img" "$T/err" || fail "no word about the removed file"
[ ! -e "$T/out.img" ] || fail "failed copy left out.img"

# The same onto an existing destination: it stays (not ours to remove), exit 1.
head -c "$size" /dev/zero >"$T/existing.img"
expect_rc 1 "failed after 6 attempts" "$FERRY" copy "nbd+unix:///?socket=$T/bad.sock" "$T/existing.img"
[ -e "$T/existing.img" ] || fail "existing destination removed"

# 10% of reads fail: retries make the copy correct; if it still fails, it says so.
start_nbdkit "$T/flaky.sock" --readonly --filter=error file "$T/src.img" error-pread-rate=10% error-pread=EIO
retried=no
for i in 1 2 3; do
  rm -f "$T/out.img"
  rc=0
  FERRY_DEBUG=copy "$FERRY" copy --json --request-size 256K "nbd+unix:///?socket=$T/flaky.sock" \
    "$T/out.img" >"$T/json" 2>"$T/err" || rc=$?
  if [ $rc -eq 0 ]; then
    same_bytes "$T/src.img" "$T/out.img"
    grep -q "failed (.*), retry 1 in" "$T/err" && retried=yes
  else
    cat "$T/err"
    [ $rc -eq 1 ] || fail "flaky source: exit $rc"
    grep -qF "failed after 6 attempts" "$T/err" || fail "flaky source: unclear message"
    [ ! -e "$T/out.img" ] || fail "failed copy left out.img"
  fi
done
# ~65 reads per run at 10%: that none of ~195 failed (and was retried) is a 1e-9 event.
[ $retried = yes ] || fail "no read was ever retried"
echo "error handling ok"
