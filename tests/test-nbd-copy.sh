#!/usr/bin/env bash
# nbdinfo and nbdcopy both ways through ferry-nbd over a sparse file.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdinfo nbdcopy

truncate -s 64M "$T/disk"
start_ferry_nbd "$T/sock" --description "test disk" "$T/disk"

# nbdinfo sees the size, flags and description.
nbdinfo --json "$NBD_URI" >"$T/info.json"
/usr/bin/python3 - "$T/info.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["export-size"] == 64 << 20, e
assert e["description"] == "test disk", e
for f in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn",
          "can_cache", "can_df"):
    assert e[f] is True, f
assert e["is_read_only"] is False
assert e["block_size_maximum"] == 32 << 20
PY

# Upload random data with holes, download it again, compare.
head -c 8M /dev/urandom >"$T/chunk"
truncate -s 64M "$T/src"
dd if="$T/chunk" of="$T/src" bs=1M seek=4 conv=notrunc status=none
dd if="$T/chunk" of="$T/src" bs=1M seek=40 conv=notrunc status=none
nbdcopy "$T/src" "$NBD_URI"
same_bytes "$T/src" "$T/disk"
nbdcopy "$NBD_URI" "$T/back"
same_bytes "$T/src" "$T/back"

# The holes nbdcopy left are reported by base:allocation.
nbdinfo --map "$NBD_URI" >"$T/map"
grep -qE '^ +4194304 +8388608 +0 +data' "$T/map" || { cat "$T/map"; fail "data extent missing"; }
grep -qE '^ +0 +4194304 +3 +hole,zero' "$T/map" || { cat "$T/map"; fail "leading hole missing"; }

stop_ferry_nbd
same_bytes "$T/src" "$T/disk"

# --direct (O_DIRECT): a 4096-byte minimum block size is advertised; copies still match.
head -c 8M /dev/urandom >"$T/d1"
truncate -s 8M "$T/ddisk"
start_ferry_nbd "$T/dsock" --direct "$T/ddisk"
nbdinfo "$NBD_URI" | grep -q 'block_size_minimum: 4096' || fail "--direct block size"
nbdcopy "$T/d1" "$NBD_URI"
nbdcopy "$NBD_URI" "$T/d2"
stop_ferry_nbd
same_bytes "$T/d1" "$T/ddisk"
same_bytes "$T/d1" "$T/d2"
echo "copy ok"
