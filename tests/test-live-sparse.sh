#!/usr/bin/env bash
# The pause does not grow with the disk: one guest, its root disk a 64 GiB sparse ext4 that it
# writes to, a second 1 GiB disk; both move live, and the pauses are printed side by side
# (figures, not assertions: timing asserts are not allowed in this suite).  The 64 GiB move
# converges (holes are skipped, not copied), the guest's files and acknowledged writes are
# on DEST, the old images are unchanged after their switch.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"

guest_disk "$T/big.img" 64G 8 -N 16384 -J size=16
guest_disk "$T/small.img" 1G 4 -N 8192 -J size=8
guest_start g loop -- \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"file0\",\"filename\":\"$T/big.img\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"file0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0 \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"file1\",\"filename\":\"$T/small.img\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt1","file":"file1"}' \
  -device virtio-blk-pci,drive=fmt1,id=vd1
guest_wait g 'ferry-guest: ack 20' 120
acks() { grep -c 'ferry-guest: ack' "$GUEST_LOG"; }

small_sha=$(sha "$T/small.img")
"$FERRY" live-move --qmp "$GUEST_QMP" --device vd1 --to "$T/small.dest" --json >"$T/small.json" ||
  fail "live-move of the 1 GiB disk"
[ "$(sha "$T/small.img")" = "$small_sha" ] || fail "the 1 GiB image changed"
same_bytes "$T/small.img" "$T/small.dest"

"$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$T/big.dest" --json >"$T/big.json" \
  2>"$T/big.err" &
mover=$!
track_pid $mover
wait_phase "$T/big.dest.ferry-live/state.json" 'switched|converged|pivoted' 60
big_sha=$(sparse_sha "$T/big.img")
guest_wait g "ferry-guest: ack $(($(acks) + 20))" 60
wait $mover || { cat "$T/big.err" >&2; fail "live-move of the 64 GiB disk"; }
[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$T/big.dest" ] || fail "QMP: vd0 not on DEST"
[ "$(qmp_disk_file "$GUEST_QMP" vd1)" = "$T/small.dest" ] || fail "QMP: vd1 not on DEST"
[ "$(stat -c %s "$T/big.dest")" = $((64 << 30)) ] || fail "DEST size"
echo "pause (ferry, stop -> cont):  1 GiB $(json_key "$T/small.json" paused_seconds) s   64 GiB $(json_key "$T/big.json" paused_seconds) s"
echo "64 GiB: converged $(json_key "$T/big.json" converged_seconds) s after the switch, copied $(json_key "$T/big.json" bytes_copied) bytes, skipped $(json_key "$T/big.json" bytes_skipped)"
echo "DEST allocated: $(du -h "$T/big.dest" | cut -f1) of 64 GiB"

guest_wait g "ferry-guest: ack $(($(acks) + 20))" 60
guest_send g stop
guest_wait_exit g 120
guest_gaps g
guest_check_disk g "$T/big.dest"
[ "$(sparse_sha "$T/big.img")" = "$big_sha" ] || fail "the 64 GiB image was written after the switch"
echo "ok: 64 GiB sparse and 1 GiB disks moved live"
