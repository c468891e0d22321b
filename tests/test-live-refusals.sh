#!/usr/bin/env bash
# ferry live-move's bad inputs and failures before cont, each with a clear message, the guest
# left running (and writing) on its own disk, nothing left behind (no workdir, no DEST it
# created, no process, no ferry node in qemu): no QMP at SOCKET, an unknown device, a paused
# guest (left paused), DEST smaller than the disk, DEST the image itself, a qcow2 disk with a
# backing file, the clone server killed while the guest is paused, a QMP error during the
# switch; and a second live-move of a device that is being moved.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
requires qemu-img

img=$T/disk.img
guest_disk "$img" 128M 4
qemu-img create -q -f raw "$T/base.raw" 32M
qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/overlay.qcow2"
guest_start g loop -- \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"file0\",\"filename\":\"$img\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"file0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0 \
  -blockdev "{\"driver\":\"qcow2\",\"node-name\":\"ov0\",\"file\":{\"driver\":\"file\",\"filename\":\"$T/overlay.qcow2\"}}" \
  -device virtio-blk-pci,drive=ov0,id=vd1
guest_wait g 'ferry-guest: ack 5' 120
acks() { grep -c 'ferry-guest: ack' "$GUEST_LOG"; }

# After each refusal: running, on its image, writing; no trace of ferry.
still_fine() {
  [ "$(qmp "$GUEST_QMP" query-status | json_key /dev/stdin status)" = running ] || fail "guest not running"
  [ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$img" ] || fail "vd0 is not on its image"
  if qmp "$GUEST_QMP" query-named-block-nodes | grep -q '"ferry-'; then fail "a ferry node is left in qemu"; fi
  [ ! -e "$T/dest.img" ] || fail "DEST left behind"
  [ ! -e "$T/dest.img.ferry-live" ] || fail "workdir left behind"
  assert_no_process "$T/dest.img"
  guest_wait g "ferry-guest: ack $(($(acks) + 3))" 30
}
move() { "$FERRY" live-move --qmp "$GUEST_QMP" --to "$T/dest.img" "$@"; }

expect_fail "$T/none.sock: no such QMP socket" "$FERRY" live-move --qmp "$T/none.sock" --device vd0 --to "$T/dest.img"
expect_fail "device nope not found; the guest's disks: vd0 (node fmt0: $img)" move --device nope
still_fine
qmp "$GUEST_QMP" stop >/dev/null
expect_fail "the guest is not running (state paused)" move --device vd0
[ "$(qmp "$GUEST_QMP" query-status | json_key /dev/stdin status)" = paused ] || fail "ferry resumed a guest it did not pause"
qmp "$GUEST_QMP" cont >/dev/null
still_fine
truncate -s 64M "$T/small.img"
expect_fail "$T/small.img: 67108864 bytes, smaller than the 134217728 bytes device vd0 needs" \
  "$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$T/small.img"
[ "$(stat -c %s "$T/small.img")" = 67108864 ] || fail "the small DEST was changed"
[ ! -e "$T/small.img.ferry-live" ] || fail "workdir left behind"
expect_fail "is device vd0's current image" move --device vd0 --to "$img"
ln "$img" "$T/hardlink.img"
expect_fail "is device vd0's current image" "$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$T/hardlink.img"
expect_fail "has a backing file $T/base.raw" move --device vd1
still_fine

# Failures while the guest is paused: it is resumed on its own disk, nothing is left.
FERRY_LIVE_FAULT=kill-server-before-switch expect_fail "the clone server killed by signal 9; the guest runs on its original disk" move --device vd0
still_fine
FERRY_LIVE_FAULT=switch-qmp-error expect_fail "moving onto the clone: blockdev-reopen: Cannot find device='' nor node-name='ferry-fault-no-such-node' (GenericError); the guest runs on its original disk" move --device vd0
still_fine

# A second live-move of the device that is being moved.
"$FERRY" live-move --qmp "$GUEST_QMP" --to "$T/dest.img" --device vd0 --rate 256K >"$T/first.out" 2>&1 &
first=$!
track_pid $first
wait_phase "$T/dest.img.ferry-live/state.json" switched 60
expect_fail "device vd0 is already being moved by ferry live-move" \
  "$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$T/other.img"
[ ! -e "$T/other.img" ] || fail "the refused second move created its DEST"
expect_fail "is in use by another ferry live-move (pid $first)" \
  "$FERRY" live-move --resume "$T/dest.img.ferry-live"
"$FERRY" set-rate "$T/dest.img.ferry-live/nbd.ctl" 0 >/dev/null
wait $first || { cat "$T/first.out" >&2; fail "the first move failed"; }
[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$T/dest.img" ] || fail "vd0 not on DEST after the first move"
guest_send g stop
guest_wait_exit g 120
guest_check_disk g "$T/dest.img"
echo "ok: refusals and failures before cont"
