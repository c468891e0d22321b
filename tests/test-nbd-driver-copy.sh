#!/usr/bin/env bash
# End to end through the nbd driver: `ferry copy` from nbdkit (unix socket and TCP) equals
# the source byte for byte with zero runs as holes; `ferry copy` into an NBD export; and a
# source failing 10% of its requests (nbdkit error filter) either copies correctly or fails
# with a clear message — never a silently wrong destination.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-copy.sh"
requires nbdkit nbdcopy

make_image "$T/src.img" 24
start_nbdkit "$T/src.sock" -r file "$T/src.img"
"$FERRY" copy "nbd+unix:///?socket=$T/src.sock" "$T/out.img"
same_bytes "$T/src.img" "$T/out.img"
check_holes "$T/out.img" "$T/src.img.map" || fail "zero runs are not holes in out.img"

PORT=$(free_port)
nbdkit_tcp "$PORT" -r file "$T/src.img"
"$FERRY" copy --connections 2 "nbd://127.0.0.1:$PORT/" "$T/out2.img"
same_bytes "$T/src.img" "$T/out2.img"

# Into an NBD export (writes, zeroes, flush through the driver), read back with nbdcopy.
start_nbdkit "$T/dst.sock" memory size=$(stat -c %s "$T/src.img")
"$FERRY" copy "$T/src.img" "nbd+unix:///?socket=$T/dst.sock"
nbdcopy "nbd+unix:///?socket=$T/dst.sock" "$T/back.img"
same_bytes "$T/src.img" "$T/back.img"

# 10% of requests fail at the source.  Exit 0 must mean equal bytes; a failure must say so.
start_nbdkit "$T/err.sock" -r --filter=error file "$T/src.img" error=EIO error-rate=10%
for i in 1 2 3; do
  rc=0
  "$FERRY" copy "nbd+unix:///?socket=$T/err.sock" "$T/e$i.img" 2>"$T/e$i.err" || rc=$?
  if [ $rc -eq 0 ]; then
    same_bytes "$T/src.img" "$T/e$i.img"
    echo "error-rate run $i: copied correctly (retried)"
  else
    [ $rc -eq 1 ] || fail "exit $rc"
    grep -qF "nbd+unix:///?socket=$T/err.sock" "$T/e$i.err" || fail "message lacks the URI: $(cat "$T/e$i.err")"
    grep -qF "Input/output error" "$T/e$i.err" || fail "message lacks the error: $(cat "$T/e$i.err")"
    echo "error-rate run $i: failed cleanly: $(head -1 "$T/e$i.err")"
  fi
done
# Every read fails: the copy must fail, saying where and why.
start_nbdkit "$T/dead.sock" -r --filter=error file "$T/src.img" error=EIO error-pread-rate=100%
expect_fail "nbd+unix:///?socket=$T/dead.sock: " \
  "$FERRY" copy "nbd+unix:///?socket=$T/dead.sock" "$T/dead.img"
grep -qF "Input/output error" "$T/err" || fail "no errno in: $(cat "$T/err")"
echo "nbd driver copy ok"
