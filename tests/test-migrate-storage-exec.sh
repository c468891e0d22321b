#!/usr/bin/env bash
# ferry migrate --storage exec:HOOK: the hook gets each storage step as one JSON line on stdin
# (asserted exactly), names the volumes' paths in its create reply, and a failing hook stops
# the move with its stderr in the message, nothing renamed, the catalog unchanged.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
dump0=$(db_dump)
# The site's volumes live outside the datastore tree: the hook maps names to paths.
mkdir "$T/pool"
cp --sparse=always "$T/source.orig" "$T/pool/src.img"

cat > "$T/hook.sh" <<HOOK
#!/bin/bash
set -e
read -r line
echo "\$line" >> "$T/hook.log"
case "\$FERRY_ACTION" in
  create) truncate -r "$T/pool/src.img" "$T/pool/dst.img"
          echo '{"path":"$T/pool/dst.img","source":"$T/pool/src.img"}' ;;
  rename) case "\$line" in
            *'"to":"42/MIGRATED-'*) mv "$T/pool/src.img" "$T/pool/migrated.img" ;;
            *'"volume":"42/MIGRATED-'*) mv "$T/pool/migrated.img" "$T/pool/src.img" ;;
          esac ;;
esac
HOOK
chmod +x "$T/hook.sh"

migrate --storage "exec:$T/hook.sh" --journal "$T/j.json" > "$T/out" 2>&1 ||
  { cat "$T/out"; fail "migrate failed"; }
grep -qE "^downtime: [0-9.]+ s " "$T/out" || fail "no downtime line"
cmp "$T/pool/dst.img" "$T/source.orig" || fail "destination differs from the source"
cmp "$T/pool/migrated.img" "$T/source.orig" || fail "hook's rename did not run"
ts=$(grep -o '"mvts":"[0-9]*"' "$T/hook.log" | head -1 | tr -dc 0-9)
[ -n "$ts" ] || fail "no mvts tag sent"
cat > "$T/want.log" <<WANT
{"action":"create","vm":42,"disk":0,"datastore":100,"volume":"42/disk.0","size":10737418240,"source":{"datastore":0,"volume":"42/disk.0"}}
{"action":"rename","vm":42,"disk":0,"datastore":0,"volume":"42/disk.0","to":"42/MIGRATED-disk.0-$ts"}
{"action":"tag","vm":42,"disk":0,"datastore":100,"volume":"42/disk.0","tags":{"nvm":"42","mvts":"$ts"}}
{"action":"tag","vm":42,"disk":0,"datastore":0,"volume":"42/MIGRATED-disk.0-$ts","tags":{"nvm":"42","mvts":"$ts"}}
WANT
diff -u "$T/want.log" "$T/hook.log" || fail "hook stdin lines differ"

# Rollback sends the inverse actions, newest first, to the same hook.
: > "$T/hook.log"
"$FERRY" migrate --rollback "$T/j.json" --one-lock "$T/one.lock" > "$T/rb" 2>&1 ||
  { cat "$T/rb"; fail "rollback failed"; }
[ "$(db_dump)" = "$dump0" ] || fail "rollback did not restore the catalog"
sed -E 's/ROLLEDBACK-disk\.0-[0-9]+/ROLLEDBACK-disk.0-TS/' "$T/hook.log" > "$T/got.log"
cat > "$T/want.log" <<WANT
{"action":"tag","vm":42,"disk":0,"datastore":0,"volume":"42/MIGRATED-disk.0-$ts","tags":{"nvm":null,"mvts":null}}
{"action":"tag","vm":42,"disk":0,"datastore":100,"volume":"42/disk.0","tags":{"nvm":null,"mvts":null}}
{"action":"rename","vm":42,"disk":0,"datastore":0,"volume":"42/MIGRATED-disk.0-$ts","to":"42/disk.0"}
{"action":"rename","vm":42,"disk":0,"datastore":100,"volume":"42/disk.0","to":"42/ROLLEDBACK-disk.0-TS"}
WANT
diff -u "$T/want.log" "$T/got.log" || fail "rollback hook lines differ"

# A failing hook: exact message, the hook saw only the create, nothing renamed or switched.
cat > "$T/fail.sh" <<HOOK
#!/bin/bash
cat >> "$T/fail.log"
echo "pool one-b: 3 GiB missing" >&2
exit 3
HOOK
chmod +x "$T/fail.sh"
cp --sparse=always "$T/source.orig" "$T/pool/src.img"
ls -R "$T/pool" "$T/ds" > "$T/files.before"
expect_fail "storage hook '$T/fail.sh' failed on create of 100:42/disk.0 (exit status 3): pool one-b: 3 GiB missing" \
  migrate --storage "exec:$T/fail.sh" --journal "$T/j2.json"
[ "$(wc -l < "$T/fail.log")" = 1 ] && grep -q '"action":"create"' "$T/fail.log" ||
  fail "failing hook was asked more than the create"
ls -R "$T/pool" "$T/ds" > "$T/files.after"
diff -u "$T/files.before" "$T/files.after" || fail "files changed after a failing hook"
[ "$(db_dump)" = "$dump0" ] || fail "failing hook: catalog changed"
[ ! -e "$T/j2.json" ] || fail "failing hook: a catalog journal was written"

# A hook that names no path for the destination is refused by name.
printf '#!/bin/sh\ncat >/dev/null\n' > "$T/mute.sh"; chmod +x "$T/mute.sh"
expect_fail "disk 0: the storage hook did not name the destination volume's path" \
  migrate --storage "exec:$T/mute.sh" --journal "$T/j3.json"
[ "$(db_dump)" = "$dump0" ] || fail "mute hook: catalog changed"
echo "migrate --storage exec ok"
