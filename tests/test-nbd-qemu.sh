#!/usr/bin/env bash
# qemu as the client: qemu-img info / convert (both ways) / compare and qemu-io read, write,
# write -z, discard through ferry-nbd, checked byte for byte against the file.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires qemu-img qemu-io

truncate -s 32M "$T/disk"
start_ferry_nbd "$T/sock" --export-name disk0 "$T/disk"
URI="nbd+unix:///disk0?socket=$T/sock"

qemu-img info --output=json "$URI" >"$T/info"
grep -q '"virtual-size": 33554432' "$T/info" || { cat "$T/info"; fail "qemu-img info size"; }

# convert into the export, then out again, and compare.
head -c 6M /dev/urandom >"$T/data"
truncate -s 32M "$T/src"
dd if="$T/data" of="$T/src" bs=1M seek=3 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$T/src" "$URI"
same_bytes "$T/src" "$T/disk"
qemu-img convert -f raw -O raw "$URI" "$T/out"
same_bytes "$T/src" "$T/out"
qemu-img compare -f raw "$T/src" -F raw "$URI" >/dev/null || fail "qemu-img compare"
# A difference is found too.
printf 'X' | dd of="$T/src" bs=1 seek=5000000 conv=notrunc status=none
if qemu-img compare -f raw "$T/src" -F raw "$URI" >/dev/null 2>&1; then fail "compare missed a difference"; fi

# qemu-io: write a pattern, write zeroes, discard, read back.
qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -z 1M 512k' -c 'write -P 0xcd 8M 4k' \
  -c 'discard 20M 1M' -c 'read -P 0xab 0 1M' -c 'read -P 0 1M 512k' -c 'read -P 0xcd 8M 4k' \
  -c 'read -P 0 20M 1M' -c 'flush' "$URI" >"$T/qio" || { cat "$T/qio"; fail "qemu-io"; }
grep -q 'Pattern verification failed' "$T/qio" && { cat "$T/qio"; fail "pattern"; }
/usr/bin/python3 - "$T/disk" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
M = 1 << 20
assert d[:M] == b"\xab" * M
assert d[M:M + M // 2] == bytes(M // 2)
assert d[8 * M:8 * M + 4096] == b"\xcd" * 4096
assert d[20 * M:21 * M] == bytes(M)
PY
stop_ferry_nbd
echo "qemu ok"
