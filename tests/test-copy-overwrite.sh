#!/usr/bin/env bash
# ferry copy over an existing destination full of garbage: the source's holes and zero runs
# must really be zeroed there (not skipped), and a larger destination keeps its tail.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"

make_image "$T/src.img" 32
size=$(stat -c %s "$T/src.img")
head -c "$size" /dev/urandom >"$T/out.img"
"$FERRY" copy --json "$T/src.img" "$T/out.img" >"$T/summary.json"
same_bytes "$T/src.img" "$T/out.img"
# Zeroing may punch: the zero ranges are holes again.
check_holes "$T/out.img" "$T/src.img.map" || fail "zero ranges not punched in out.img"

# A destination larger than the source: the first $size bytes equal, the tail untouched.
head -c $((size + 65536)) /dev/urandom >"$T/big.img"
tail -c 65536 "$T/big.img" >"$T/tail.want"
"$FERRY" copy --request-size 1M --requests 5 "$T/src.img" "$T/big.img"
cmp -n "$size" "$T/src.img" "$T/big.img" || fail "big.img differs in the copied part"
tail -c 65536 "$T/big.img" | cmp - "$T/tail.want" || fail "tail of big.img changed"

# --no-sparse over garbage: also equal.
head -c "$size" /dev/urandom >"$T/out3.img"
"$FERRY" copy --no-sparse "$T/src.img" "$T/out3.img"
same_bytes "$T/src.img" "$T/out3.img"
echo "overwrite ok"
