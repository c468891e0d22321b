#!/usr/bin/env bash
# ferry migrate --storage fs: the destination file is created and filled by a lazy clone
# (ferry-nbd), an existing destination is set aside (RENAMED-), the source renamed MIGRATED-,
# tags in sidecars; --dry-run changes nothing; --rollback undoes catalog and renames.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
mkdir -p "$T/ds/100/42"; printf OLD > "$T/ds/100/42/disk.0"   # a stale file where the destination goes
dump0=$(db_dump)

# Dry run: the storage actions and the server command line are printed, nothing changes.
migrate --storage fs --datastores "$T/ds" --dry-run > "$T/dry" || fail "dry run failed"
grep -qE "^  before the clone  : rename 100:42/disk\.0 -> 42/RENAMED-disk\.0-[0-9]+  \[$T/ds/100/42/disk\.0\]$" "$T/dry" ||
  { cat "$T/dry"; fail "dry run lacks the RENAMED step"; }
grep -qF "  before the clone  : create 100:42/disk.0 (8.0 MiB)  [$T/ds/100/42/disk.0]" "$T/dry" ||
  fail "dry run lacks the create step"
grep -qE "^  after convergence: rename 0:42/disk\.0 -> 42/MIGRATED-disk\.0-[0-9]+  " "$T/dry" ||
  fail "dry run lacks the MIGRATED step"
grep -qE "^  disk 0 destination clone: ferry-nbd --foreground --socket .*/disk-0\.sock " "$T/dry" ||
  fail "dry run lacks the server command line"
[ "$(db_dump)" = "$dump0" ] || fail "dry run changed the catalog"
[ "$(cat "$T/ds/100/42/disk.0")" = OLD ] || fail "dry run touched the destination"
cmp "$T/ds/0/42/disk.0" "$T/source.orig" || fail "dry run touched the source"

# Refusals name the problem and change nothing.
expect_fail "datastore 0: source volume $T/nowhere/0/42/disk.0: No such file or directory" \
  migrate --storage fs --datastores "$T/nowhere" --journal "$T/bad.json"
[ "$(db_dump)" = "$dump0" ] || fail "refused move changed the catalog"
[ ! -e "$T/bad.json" ] || fail "refused move left a journal"
rc=0; migrate --storage fs --frontend ceph 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF -- "--frontend ceph: expected nbd or fuse" "$T/err" || fail "bad --frontend"

# A clone server that dies before serving: its output in the message, the storage step undone
# (no destination left, the stale file back under its name), the catalog untouched.
printf '#!/bin/sh\necho "ferry-nbd: map.bin: corrupt header" >&2\nexit 3\n' > "$T/bad-nbd"
chmod +x "$T/bad-nbd"
FERRY_NBD=$T/bad-nbd expect_fail \
  "disk 0: $T/bad-nbd exited with status 3 before serving: ferry-nbd: map.bin: corrupt header" \
  migrate --storage fs --datastores "$T/ds" --journal "$T/dead.json"
[ "$(db_dump)" = "$dump0" ] || fail "dead server: catalog changed"
[ "$(cat "$T/ds/100/42/disk.0")" = OLD ] || fail "dead server: stale destination not restored"
[ -z "$(ls "$T/ds/100/42/" | grep -v '^disk\.0$')" ] || fail "dead server: files left: $(ls "$T/ds/100/42")"
cmp "$T/ds/0/42/disk.0" "$T/source.orig" || fail "dead server: source touched"

# The move.
migrate --storage fs --datastores "$T/ds" --journal "$T/j.json" > "$T/out" 2>&1 ||
  { cat "$T/out"; fail "migrate failed"; }
grep -qE "^downtime: [0-9]+\.[0-9]{3} s \(VM stopped -> first read served on the destination\)$" "$T/out" ||
  { cat "$T/out"; fail "no downtime line"; }
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs from the source"
migrated=$(ls "$T/ds/0/42/" | grep -E '^MIGRATED-disk\.0-[0-9]+$') || fail "no MIGRATED source"
ts=${migrated##*-}
cmp "$T/ds/0/42/$migrated" "$T/source.orig" || fail "MIGRATED source changed"
[ ! -e "$T/ds/0/42/disk.0" ] || fail "source still under its name"
[ "$(cat "$T/ds/100/42/RENAMED-disk.0-$ts")" = OLD ] || fail "stale destination not set aside"
want="{
  \"tags\": {
    \"nvm\": \"42\",
    \"mvts\": \"$ts\"
  }
}"
[ "$(cat "$T/ds/100/42/disk.0.ferry.json")" = "$want" ] || fail "destination tags"
[ "$(cat "$T/ds/0/42/$migrated.ferry.json")" = "$want" ] || fail "source tags"
[ -s "$T/j.json.storage.json" ] || fail "no storage log beside the journal"
# The catalog switched (two of the edits, read back by XPath).
[ "$(xpath 'SELECT body FROM history WHERE vid=42 AND seq=1' ./DS_ID)" = 100 ] || fail "history DS_ID"
[ "$(xpath 'SELECT body FROM vm_pool WHERE oid=42' "./TEMPLATE/DISK[DISK_ID='0']/CLUSTER_ID")" = 100 ] ||
  fail "disk CLUSTER_ID"
# The clone server is gone (stopped gracefully, map committed).
pid=$(cat "$T/j.json.d/disk-0.pid" 2>/dev/null || true)
[ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || fail "ferry-nbd still running"

# Rollback: catalog rows back, source back under its name, stale destination back, the
# clone kept aside as ROLLEDBACK-.
"$FERRY" migrate --rollback "$T/j.json" --one-lock "$T/one.lock" > "$T/rb" 2>&1 ||
  { cat "$T/rb"; fail "rollback failed"; }
[ "$(db_dump)" = "$dump0" ] || fail "rollback did not restore the catalog"
cmp "$T/ds/0/42/disk.0" "$T/source.orig" || fail "rollback did not restore the source"
[ "$(cat "$T/ds/100/42/disk.0")" = OLD ] || fail "rollback did not restore the stale destination"
ls "$T/ds/0/42/" | grep -q MIGRATED && fail "MIGRATED file left after rollback"
kept=$(ls "$T/ds/100/42/" | grep -E '^ROLLEDBACK-disk\.0-[0-9]+$') || fail "clone not kept aside"
cmp "$T/ds/100/42/$kept" "$T/source.orig" || fail "kept clone differs"
[ ! -e "$T/ds/100/42/disk.0.ferry.json" ] && [ ! -e "$T/ds/0/42/disk.0.ferry.json" ] ||
  fail "tags left after rollback"
grep -qF "storage undo: rename 0:42/MIGRATED-disk.0-$ts -> 42/disk.0" "$T/rb" || fail "rollback output"
echo "migrate --storage fs ok"
