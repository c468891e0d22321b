#!/usr/bin/env bash
# --hold: a clone whose source still changes (a live migration's destination before the source
# VM stopped).  Reads are served from the source and not kept (a later change of the source
# shows), nothing is copied, `ferry resume` is refused; a write is kept; `ferry release` starts
# the copy, and the destination converges to the source as it is then, plus the write.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"

MNT=$T/mnt
src=$T/src.img dst=$T/dst.img map=$T/map ctl=$T/ctl
head -c $((4 << 20)) /dev/urandom >"$src"
truncate -s "$(stat -c %s "$src")" "$dst"
field() { "$FERRY" status --json "$ctl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

fuse_start "$MNT" --hold --control "$ctl" --source "$src" --map "$map" "$dst"
[ "$(field held)" = True ] && [ "$(field state)" = paused ] || fail "not held and paused: $(field state)"
cmp "$MNT/disk" "$src" || fail "a held clone does not read the source"
[ "$(field regions_hydrated)" = 0 ] || fail "a held clone kept $(field regions_hydrated) regions it read"
cmp -s "$dst" <(head -c $((4 << 20)) /dev/zero) || fail "a held clone wrote its destination"
# The source changes (the source VM still runs): the clone shows the change.
head -c 65536 /dev/urandom >"$T/change"
dd if="$T/change" of="$src" bs=65536 seek=2 conv=notrunc status=none
cmp "$MNT/disk" "$src" || fail "a held clone served old source bytes after the source changed"

expect_fail "resume: the clone is held (its source may still change)" "$FERRY" resume "$ctl"
"$FERRY" status "$ctl" | grep -qF "state:       paused (held: ferry release starts the copy)" ||
  fail "ferry status does not say held"

# A partial write into region 5 (64 KiB regions): the region is filled from the source and kept.
head -c 1000 /dev/urandom >"$T/w"
dd if="$T/w" of="$MNT/disk" bs=1000 seek=$((5 * 65536 + 100)) oflag=seek_bytes conv=notrunc,fsync status=none
[ "$(field regions_hydrated)" = 1 ] || fail "the written region is not kept ($(field regions_hydrated))"

# The source's last change, then the release.
dd if="$T/change" of="$src" bs=65536 seek=9 conv=notrunc status=none
cp "$src" "$T/expect"
dd if="$T/w" of="$T/expect" bs=1000 seek=$((5 * 65536 + 100)) oflag=seek_bytes conv=notrunc status=none
"$FERRY" release "$ctl" | grep -q "state hydrating" || fail "ferry release did not start the copy"
[ "$(field held)" = False ] || fail "still held after ferry release"
"$FERRY" wait --timeout 60 "$ctl" >/dev/null || fail "the released clone did not converge"
fuse_stop "$MNT"
cmp "$dst" "$T/expect" || fail "the destination is not the source at release plus the write"
fuse_check_sanitizer_logs
echo "ok: held reads kept nothing, the write was kept, the release converged"
