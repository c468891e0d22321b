#!/usr/bin/env bash
# ferry-fuse refuses bad input with a message naming the problem and leaves nothing mounted:
# bad flags (exit 2), missing/non-empty/non-directory mountpoint, unreachable sources (exit 1),
# and a corrupt partition table is reported but the whole disk still served.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires sgdisk

MNT="$T/mnt"
mkdir -p "$MNT"
img="$T/disk.img"
truncate -s 8M "$img"

usage() { # usage TEXT ARGS...: exit 2 and TEXT on stderr
  local want=$1 rc=0; shift
  "$FERRY_FUSE" "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -eq 2 ] || { cat "$T/err" >&2; fail "'$*' exited $rc, want 2"; }
  grep -qF -- "$want" "$T/err" || { cat "$T/err" >&2; fail "'$*': stderr lacks: $want"; }
  fuse_assert_clean "$MNT"
}
usage "option '--frobnicate' is unknown" --frobnicate "$img" "$MNT"
usage "missing MOUNTPOINT" "$img"
usage "missing VOLUME and MOUNTPOINT"
usage "unexpected argument 'extra'" "$img" "$MNT" extra
usage "--source needs --map" --source "$img" "$img" "$MNT"
usage "--map needs --source" --map "$T/map" "$img" "$MNT"
usage "need --source and --map" --rate 10M "$img" "$MNT"
usage "--region-size: 3000 is not a power of two from 4K to 64M" --source "$img" --map "$T/m" --region-size 3000 "$img" "$MNT"
usage "--threads" --threads 0 "$img" "$MNT"
usage "--connections" --connections 0 "$img" "$MNT"
usage "--connections" -C 65 "$img" "$MNT"
usage "option '--control' is unknown or lacks its value" --control
usage "option '-x' is unknown" -x "$img" "$MNT"
"$FERRY_FUSE" --help | grep -q -- "--source SRC --map MAP" || fail "--help"
"$FERRY_FUSE" --version | grep -q "^ferry-fuse [0-9]" || fail "--version"

fails() { # fails TEXT ARGS...: exit 1, TEXT on stderr, nothing mounted
  local want=$1 rc=0; shift
  "$FERRY_FUSE" "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -eq 1 ] || { cat "$T/err" >&2; fail "'$*' exited $rc, want 1"; }
  grep -qF -- "$want" "$T/err" || { cat "$T/err" >&2; fail "'$*': stderr lacks: $want"; }
  echo "ok: refused: $(head -1 "$T/err")"
  fuse_assert_clean "$MNT"
}
fails "mountpoint $T/nonexistent: No such file or directory" "$img" "$T/nonexistent"
touch "$MNT/file"
fails "mountpoint $MNT: not empty (it holds 'file')" "$img" "$MNT"
fails "mountpoint $MNT/file: not a directory" "$img" "$MNT/file"
rm "$MNT/file"
fails "$T/missing.img: No such file or directory" "$T/missing.img" "$MNT"
fails "$T/missing.img: No such file or directory" --foreground "$T/missing.img" "$MNT"
fails "unsupported URI scheme 'ftp'" ftp://127.0.0.1/x "$MNT"
port=$(free_port) # nothing listens there
fails "127.0.0.1:$port" "nbd://127.0.0.1:$port/" "$MNT"
fails "127.0.0.1:$port" "http://127.0.0.1:$port/disk.img" "$MNT"
fails "$T/nosock" "nbd+unix:///?socket=$T/nosock" "$MNT"

# A GPT whose primary header is damaged but whose backup is sound: served from the backup,
# with a warning saying so.
sgdisk -n1:2048:+2M -n2:0:+2M "$img" >/dev/null
printf '\x01' | dd of="$img" bs=1 seek=$((512 + 60)) conv=notrunc status=none
fuse_start "$MNT" "$img"
grep -q "warning: $img: primary GPT damaged (GPT header CRC32 mismatch .*using the backup at sector 16383" "$FUSE_ERR" ||
  { cat "$FUSE_ERR" >&2; fail "no warning about the damaged primary GPT"; }
ls "$MNT" | sort | tr '\n' ' ' | grep -qx "disk disk-p1 disk-p2 " || fail "listing: $(ls "$MNT")"
cmp <(dd if="$img" bs=512 skip=2048 count=4096 status=none) "$MNT/disk-p1" || fail "disk-p1 from the backup GPT"
fuse_stop "$MNT"

# Both headers damaged: a warning naming the problem, the whole disk still served.
printf '\x01' | dd of="$img" bs=1 seek=$(((8 << 20) - 512 + 60)) conv=notrunc status=none
fuse_start "$MNT" "$img"
grep -q "warning: $img: partition table ignored: GPT header CRC32 mismatch" "$FUSE_ERR" ||
  { cat "$FUSE_ERR" >&2; fail "no warning about the corrupt GPT"; }
[ "$(ls "$MNT")" = disk ] || fail "partitions of a corrupt table exposed: $(ls "$MNT")"
cmp "$img" "$MNT/disk" || fail "disk differs"
fuse_stop "$MNT"

# An MBR partition running past the end of the disk: refused, the disk still served.
truncate -s 0 "$img"; truncate -s 8M "$img"
printf '\x83\0\0\0\x00\x08\0\0\x00\x40\0\0' | dd of="$img" bs=1 seek=$((446 + 4)) conv=notrunc status=none
printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
fuse_start "$MNT" "$img"
grep -q "partition table ignored: MBR partition 1 (sectors 2048+16384) ends beyond the disk (16384 sectors)" "$FUSE_ERR" ||
  { cat "$FUSE_ERR" >&2; fail "no warning about the MBR partition past the end"; }
[ "$(ls "$MNT")" = disk ] || fail "partitions of a corrupt MBR exposed: $(ls "$MNT")"
fuse_stop "$MNT"
fuse_check_sanitizer_logs
echo "fuse errors ok"
