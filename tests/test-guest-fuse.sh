#!/usr/bin/env bash
# A real guest boots from the loop device of `ferry-fuse --loop` over a hydrating clone (the
# path an OpenNebula hypervisor is given): it verifies every generated file while the copy
# runs, writes its own files and powers off; after convergence the destination is a clean
# ext4 holding both, the source is untouched, nothing stays mounted or attached.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
. "$TESTS_DIR/lib-guest.sh"

MNT=$T/mnt
src=$T/src.img dst=$T/dst.img map=$T/map ctl=$T/ctl.sock
guest_disk "$src" 256M 16
truncate -s "$(stat -c %s "$src")" "$dst"
src_sha=$(sha "$src")

fuse_start "$MNT" --loop --control "$ctl" --rate 2M --source "$src" --map "$map" "$dst"
dev=$(cat "$FUSE_OUT")
[[ $dev == /dev/loop* ]] || fail "ferry-fuse --loop printed '$dev'"
guest_start g verify --append "ferry.files=8" -- \
  -blockdev "{\"driver\":\"host_device\",\"node-name\":\"dev0\",\"cache\":{\"direct\":true},\"filename\":\"$dev\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"dev0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0
guest_wait g 'ferry-guest: verified' 180
"$FERRY" status --json "$ctl" >"$T/status.json"
state=$(json_key "$T/status.json" state)
fetched=$(json_key "$T/status.json" bytes_fetched)
echo "after the guest verified its files through $dev: state $state, $fetched bytes fetched on demand"
[ "$state" = hydrating ] || fail "the copy was not running while the guest verified (state $state)"
[ "$fetched" -gt 0 ] || fail "nothing was fetched on demand"
guest_wait_exit g 180

"$FERRY" set-rate "$ctl" 0 >/dev/null
"$FERRY" wait --timeout 120 "$ctl" | grep -q converged || fail "the clone did not converge"
fuse_stop "$MNT"
guest_check_disk g "$dst"
[ "$(sha "$src")" = "$src_sha" ] || fail "the source image changed"
if cmp -s "$src" "$dst"; then fail "the guest's writes are not on the destination"; fi
echo "ok: guest booted from ferry-fuse --loop's $dev"
