#!/usr/bin/env bash
# The map knows its destination (issue 13, item 4): a lost map over a destination holding
# the clone's flushed writes is refused (it used to be recreated, and the hydrator then
# overwrote those writes with source data) unless --new-map; a map is refused for another
# destination (a copy, or a file made anew at the same path); --new-map accepts a
# destination whose content may go.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"

head -c 8M /dev/urandom >"$T/src"
truncate -s 8M "$T/dst"

# 1. A guest writes through the clone and flushes; then the map is lost.
start_ferry_nbd "$T/clone.sock" --paused --source "$T/src" --map "$T/map" "$T/dst"
head -c 65536 /dev/urandom >"$T/guest"
"$VOLTOOL" write "$NBD_URI" 1048576 <"$T/guest"
"$VOLTOOL" flush "$NBD_URI"
stop_ferry_nbd
before=$(sha "$T/dst")
rm "$T/map"
expect_fail "the map is missing, but the destination already holds data" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
grep -qF -- "--new-map" "$T/err" || fail "the refusal does not name --new-map"
[ ! -e "$T/map" ] || fail "a map was created anyway"
[ "$(sha "$T/dst")" = "$before" ] || fail "the destination changed"
# The same through ferry-nbd: it does not start.
expect_fail "already holds data" "$FERRY_NBD" --foreground --socket "$T/x.sock" \
  --source "$T/src" --map "$T/map" "$T/dst"
[ "$(sha "$T/dst")" = "$before" ] || fail "the destination changed"

# 2. --new-map: the destination's content may go; the clone converges to the source.
"$FERRY" hydrate --new-map --source "$T/src" --map "$T/map" "$T/dst" >/dev/null
same_bytes "$T/src" "$T/dst"

# 3. The map is this destination's: a copy of it is another one...
cp --sparse=always "$T/dst" "$T/copy"
expect_fail "map belongs to another destination (inode $(stat -c %i "$T/dst")" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/copy"
# ... a rename keeps it (the same inode) ...
mv "$T/dst" "$T/moved"
"$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/moved" >/dev/null
# ... and a file made anew at a path the map knew is another one, --new-map or not (it only
# lets a missing map be created).
cp "$T/moved" "$T/dst"
expect_fail "map belongs to another destination" \
  "$FERRY" hydrate --source "$T/src" --map "$T/map" "$T/dst"
expect_fail "map belongs to another destination" \
  "$FERRY" hydrate --new-map --source "$T/src" --map "$T/map" "$T/dst"
echo "the map knows its destination"
