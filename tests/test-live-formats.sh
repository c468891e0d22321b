#!/usr/bin/env bash
# ferry live-move of a qcow2 disk (the protocol layer moves: the clone copies the image
# file's bytes and qemu keeps decoding qcow2 on top, growing the file as it allocates) and of
# a -drive disk (qemu's auto-named nodes: a sync=none mirror switches it), both while the
# guest writes to its qcow2 root disk.  DEST is a clean qcow2 with every file and
# acknowledged write, the -drive DEST equals its source byte for byte, the old images are
# unchanged after the switch, QMP shows both devices on their DEST.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
requires qemu-img

guest_disk "$T/root.raw" 128M 8
qemu-img convert -q -f raw -O qcow2 "$T/root.raw" "$T/root.qcow2"
rm "$T/root.raw"
head -c 24M /dev/urandom >"$T/data.raw"
cp "$T/data.raw" "$T/data.expect"
guest_start g loop -- \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"proto0\",\"filename\":\"$T/root.qcow2\"}" \
  -blockdev '{"driver":"qcow2","node-name":"qcow0","file":"proto0"}' \
  -device virtio-blk-pci,drive=qcow0,id=vd0 \
  -drive "file=$T/data.raw,format=raw,if=none,id=drive1" \
  -device virtio-blk-pci,drive=drive1,id=vd1
guest_wait g 'ferry-guest: ack 20' 120
acks() { grep -c 'ferry-guest: ack' "$GUEST_LOG"; }

# qcow2: DEST gets room for the image fully allocated (sparse).
"$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$T/dest.qcow2" --rate 4M --json \
  >"$T/q.json" 2>"$T/q.err" &
mover=$!
track_pid $mover
wait_phase "$T/dest.qcow2.ferry-live/state.json" 'switched|converged|pivoted' 60
old_sha=$(sha "$T/root.qcow2")
guest_wait g "ferry-guest: ack $(($(acks) + 20))" 60
wait $mover || { cat "$T/q.err" >&2; fail "live-move of the qcow2 disk failed"; }
echo "qcow2: paused $(json_key "$T/q.json" paused_seconds) s, DEST $(stat -c %s "$T/dest.qcow2") bytes for a $(stat -c %s "$T/root.qcow2") byte image"
[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$T/dest.qcow2" ] || fail "QMP: vd0 not on DEST"
qmp "$GUEST_QMP" query-block | grep -q '"format": "qcow2"' || fail "vd0 no longer decoded as qcow2"

# -drive: qemu's own node names; switched by a sync=none mirror, pivoted by reopen.
data_sha=$(sha "$T/data.raw")
"$FERRY" live-move --qmp "$GUEST_QMP" --device drive1 --to "$T/dest.data" --json \
  >"$T/d.json" 2>"$T/d.err" || { cat "$T/d.err" >&2; fail "live-move of the -drive disk failed"; }
echo "-drive: paused $(json_key "$T/d.json" paused_seconds) s"
[ "$(qmp_disk_file "$GUEST_QMP" vd1)" = "$T/dest.data" ] || fail "QMP: vd1 not on DEST"
same_bytes "$T/data.expect" "$T/dest.data"
[ "$(sha "$T/data.raw")" = "$data_sha" ] || fail "the -drive image changed"
assert_no_process "$T/dest"

guest_wait g "ferry-guest: ack $(($(acks) + 20))" 60
guest_send g stop
guest_wait_exit g 120
guest_gaps g
qemu-img check -q "$T/dest.qcow2" || fail "qemu-img check DEST"
[ "$(sha "$T/root.qcow2")" = "$old_sha" ] || fail "the old qcow2 image was written after the switch"
qemu-img convert -q -f qcow2 -O raw "$T/dest.qcow2" "$T/dest.raw"
guest_check_disk g "$T/dest.raw"
echo "ok: qcow2 and -drive disks"
