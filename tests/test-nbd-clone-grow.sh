#!/usr/bin/env bash
# ferry-nbd --paused: nothing is copied from the source until `ferry resume` (or a client
# read); --size: a clone larger than its source reads zeroes past the source's end, takes
# writes there (a qcow2 image file grows), converges and reopens on the same map; a map made
# with another --size is refused.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdcopy qemu-io

head -c 3M /dev/urandom >"$T/src"
src_sha=$(sha "$T/src")
truncate -s 8M "$T/dest"
start_ferry_nbd "$T/sock" --control "$T/ctl" --paused --size 8M --source "$T/src" \
  --map "$T/map" "$T/dest"
"$FERRY" status --json "$T/ctl" >"$T/st.json"
grep -q '"state": *"paused"' "$T/st.json" || { cat "$T/st.json"; fail "not paused"; }
grep -q '"size": *8388608' "$T/st.json" || { cat "$T/st.json"; fail "clone size is not --size"; }
sleep 0.5 # a hydrator that ignored --paused would have copied 3 MiB by now
"$FERRY" status --json "$T/ctl" | grep -q '"regions_hydrated": *0,' || fail "the paused hydrator copied"

# Past the source's end: zeroes, and writes land there.
head -c 65536 /dev/urandom >"$T/w"
qemu-io -f raw -c "write -s $T/w 7M 64k" -c flush "$NBD_URI" >/dev/null
cp "$T/src" "$T/expect"
truncate -s 8M "$T/expect"
dd if="$T/w" of="$T/expect" bs=64k seek=112 conv=notrunc status=none
nbdcopy "$NBD_URI" "$T/read"
same_bytes "$T/expect" "$T/read"

"$FERRY" resume "$T/ctl" >/dev/null
"$FERRY" wait --timeout 60 "$T/ctl" | grep -q converged || fail "did not converge"
stop_ferry_nbd
same_bytes "$T/expect" "$T/dest"
[ "$(sha "$T/src")" = "$src_sha" ] || fail "the source changed"

# The same map reopens with the same --size, and is refused without it (sizes differ).
start_ferry_nbd "$T/sock" --control "$T/ctl" --size 8M --source "$T/src" --map "$T/map" "$T/dest"
"$FERRY" wait --timeout 10 "$T/ctl" | grep -q converged || fail "reopened clone not converged"
stop_ferry_nbd
expect_fail "map is for a volume of 8388608 bytes, not 3145728" "$FERRY_NBD" --foreground --socket "$T/sock2" --source "$T/src" --map "$T/map" "$T/dest"
# A destination smaller than --size.
truncate -s 4M "$T/small"
expect_fail "destination is smaller (4194304 bytes) than the clone's size over" \
  "$FERRY_NBD" --foreground --socket "$T/sock3" --size 8M --source "$T/src" --map "$T/map3" "$T/small"
echo "ok: --paused and --size"

# The source grows after the clone server opened it (a qcow2 image the running guest keeps
# allocating in until ferry live-move pauses it): what it appended is data, read from the
# source, not the zeroes past its old end.
head -c 1M /dev/urandom >"$T/gsrc"
truncate -s 4M "$T/gdest"
start_ferry_nbd "$T/gsock" --control "$T/gctl" --paused --size 4M --source "$T/gsrc" \
  --map "$T/gmap" "$T/gdest"
head -c $((1536 << 10)) /dev/urandom >>"$T/gsrc" # now 2.5 MiB, after the server's open
cp "$T/gsrc" "$T/gexpect"
truncate -s 4M "$T/gexpect"
nbdcopy "$NBD_URI" "$T/gread"
same_bytes "$T/gexpect" "$T/gread"
"$FERRY" resume "$T/gctl" >/dev/null
"$FERRY" wait --timeout 60 "$T/gctl" | grep -q converged || fail "the grown source's clone did not converge"
stop_ferry_nbd
same_bytes "$T/gexpect" "$T/gdest"
echo "ok: a source that grew after the clone opened it is read to its new end"
