#!/usr/bin/env bash
# A real guest (qemu, tests/guest) boots from a ferry-nbd clone export while it hydrates:
# it verifies every generated file (fetched on demand) while the background copy still runs,
# writes files of its own and powers off; after convergence the destination is a clean ext4
# holding both, and the source image is untouched.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
. "$TESTS_DIR/lib-guest.sh"

src=$T/src.img dst=$T/dst.img map=$T/map ctl=$T/ctl.sock sock=$T/nbd.sock
guest_disk "$src" 256M 16
truncate -s "$(stat -c %s "$src")" "$dst"
src_sha=$(sha "$src")

# 2 MiB/s: the copy of the image's ~30 MiB of data is far from done while the guest boots.
start_ferry_nbd "$sock" --control "$ctl" --rate 2M --source "$src" --map "$map" "$dst"
guest_start g verify --append "ferry.files=8" -- \
  -blockdev "{\"driver\":\"nbd\",\"node-name\":\"nbd0\",\"cache\":{\"direct\":true},\"server\":{\"type\":\"unix\",\"path\":\"$sock\"},\"export\":\"\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"nbd0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0
guest_wait g 'ferry-guest: verified' 180
"$FERRY" status --json "$ctl" >"$T/status.json"
state=$(json_key "$T/status.json" state)
fetched=$(json_key "$T/status.json" bytes_fetched)
echo "after the guest verified its files: state $state, $fetched bytes fetched on demand"
[ "$state" = hydrating ] || fail "the copy was not running while the guest verified (state $state)"
[ "$fetched" -gt 0 ] || fail "nothing was fetched on demand"
guest_wait_exit g 180

"$FERRY" set-rate "$ctl" 0 >/dev/null
"$FERRY" wait --timeout 120 "$ctl" | grep -q converged || fail "the clone did not converge"
stop_ferry_nbd
guest_check_disk g "$dst"
[ "$(sha "$src")" = "$src_sha" ] || fail "the source image changed"
if cmp -s "$src" "$dst"; then fail "the guest's writes are not on the destination"; fi
echo "ok: guest booted from a hydrating ferry-nbd export"
