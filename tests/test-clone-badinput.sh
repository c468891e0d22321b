#!/usr/bin/env bash
# Every refusal of `ferry hydrate`: exit non-zero with a message naming the problem, and the
# map and destination unchanged (sha256).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-clone.sh"

head -c 4M /dev/urandom >"$T/src"
head -c 4M /dev/urandom >"$T/other"            # same size, another source
truncate -s 8M "$T/bigger"                      # another size
truncate -s 4M "$T/dst"
truncate -s 2M "$T/small"
# A half-hydrated map: start paused, stop it (SIGTERM is clean: map committed).
"$FERRY" hydrate --source "$T/src" --map "$T/map" --paused "$T/dst" 2>"$T/err1" &
pid=$!
track_pid $pid
wait_for_file "$T/map"
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc = 1 ] || fail "SIGTERM'd hydrate exited $rc, expected 1"
grep -q "interrupted by signal" "$T/err1" || fail "no interruption message"

before_map=$(sha "$T/map"); before_dst=$(sha "$T/dst")
unchanged() {
  [ "$(sha "$T/map")" = "$before_map" ] || fail "map changed by: $*"
  [ "$(sha "$T/dst")" = "$before_dst" ] || fail "destination changed by: $*"
}

truncate -s 8M "$T/bigdst"
expect_fail "$T/map: map is for a volume of 4194304 bytes, not 8388608" \
  "$FERRY" hydrate --source "$T/bigger" --map "$T/map" "$T/bigdst"
unchanged other size
[ "$(sha "$T/bigdst")" = "$(sha "$T/bigger")" ] || fail "bigdst written"
expect_fail "$T/map: region size 65536 does not match 131072" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" --region-size 128K "$T/dst"
unchanged other region size
expect_fail "$T/map: map belongs to another source ('$T/src', 4194304 bytes), not '$T/other'" \
  "$FERRY" hydrate --source "$T/other" --map "$T/map" "$T/dst"
unchanged other source
expect_fail "$T/small: destination is smaller (2097152 bytes) than the source" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/small"
unchanged smaller destination
expect_fail "$T/nosuch: No such file or directory" \
  "$FERRY" hydrate --source "$T/nosuch" --map "$T/map" "$T/dst"
unchanged missing source

# The map in use by a running clone.
"$FERRY" hydrate --source "$T/src" --map "$T/map" --paused --control "$T/ctl" "$T/dst" &
pid=$!
track_pid $pid
wait_for_file "$T/ctl"
expect_fail "$T/map: map is in use by another process" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
kill -TERM $pid; wait $pid || true
unchanged map in use

# Corrupt headers (both slots): refused, file untouched.
cp "$T/map" "$T/map.good"
printf 'XX' | dd of="$T/map" bs=1 seek=100 conv=notrunc status=none
printf 'XX' | dd of="$T/map" bs=1 seek=4196 conv=notrunc status=none
before_map=$(sha "$T/map")
expect_fail "$T/map: corrupt region map (bad header checksum)" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
unchanged corrupt map
head -c 20000 /dev/urandom >"$T/map"
before_map=$(sha "$T/map")
expect_fail "$T/map: corrupt region map (bad magic (not a ferry region map))" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
unchanged garbage map
cp "$T/map.good" "$T/map"
before_map=$(sha "$T/map")

# A refused run never leaves a destination it created behind.
expect_fail "map is for a volume of" \
  "$FERRY" hydrate --source "$T/bigger" --map "$T/map" "$T/newdst"
[ ! -e "$T/newdst" ] || fail "refused hydrate left $T/newdst behind"

# Usage errors: exit 2 and a message naming the flag.
usage() {
  local want=$1; shift
  local rc=0
  "$FERRY" hydrate "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc = 2 ] || fail "exit $rc (expected 2) for: $*"
  grep -qF -- "$want" "$T/err" || { cat "$T/err" >&2; fail "no '$want' for: $*"; }
}
usage "missing --source SRC" --map "$T/map" "$T/dst"
usage "missing --map MAP" --source "$T/src" "$T/dst"
usage "missing DEST" --source "$T/src" --map "$T/map"
usage "too many arguments: 'x'" --source "$T/src" --map "$T/map" "$T/dst" x
usage "--region-size: 3000 is not a power of two from 4K to 64M" \
  --source "$T/src" --map "$T/map" --region-size 3000 "$T/dst"
usage "--region-size: 128M is not a power of two from 4K to 64M" \
  --source "$T/src" --map "$T/map" --region-size 128M "$T/dst"
usage "--workers" --source "$T/src" --map "$T/map" --workers 0 "$T/dst"
usage "--rate: '0' must be more than 0 bytes/s" --source "$T/src" --map "$T/map" --rate 0 "$T/dst"
usage "--commit-interval: '0' must be seconds from 0.01 to 3600" \
  --source "$T/src" --map "$T/map" --commit-interval 0 "$T/dst"
usage "unknown option '--bogus'" --source "$T/src" --map "$T/map" --bogus "$T/dst"
unchanged usage errors
"$FERRY" hydrate --help | grep -q -- "--source SRC" || fail "--help"

# And the good run still works on the untouched files.
"$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
same_bytes "$T/src" "$T/dst"
echo "bad input refused, nothing changed"
