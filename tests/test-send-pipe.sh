#!/usr/bin/env bash
# ferry send | ferry receive through a pipe: byte-exact, holes sent as one record and kept,
# the digest printed equal to ferry verify's; into an existing larger volume (its old bytes
# where the source has zeroes are zeroed), into a seekable .zst, from an NBD source.  Refused
# or failing with where and why: a destination too small (before any write), a truncated
# stream (the record and volume offset; a new destination removed, an existing one holding
# everything before that offset), a corrupt chunk, a corrupt record header, not a stream.
# A 64 GiB sparse volume goes through in well under a second of data.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-zst.sh"
requires nbdkit

make_mixed "$T/src.img" 20
SIZE=$(stat -c %s "$T/src.img")
DIGEST=$("$FERRY" verify --digest "$T/src.img" | cut -d' ' -f1)

"$FERRY" send --json "$T/src.img" 2>"$T/send.json" >"$T/stream"
"$FERRY" receive --json "$T/new.img" <"$T/stream" >"$T/recv.json"
same_bytes "$T/src.img" "$T/new.img"
/usr/bin/python3 - "$T/send.json" "$T/recv.json" "$T/stream" "$DIGEST" "$SIZE" <<'PY' || fail "json"
import json, os, sys
s, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert s["digest"] == r["digest"] == sys.argv[4], (s, r)
assert s["bytes_sent"] == r["bytes_received"] == os.path.getsize(sys.argv[3]), (s, r)
assert s["size"] == r["size"] == int(sys.argv[5])
assert s["zero_bytes"] > 0 and s["data_bytes"] + s["zero_bytes"] == s["size"], s
assert os.path.getsize(sys.argv[3]) < s["data_bytes"], "nothing compressed"
PY
# A plain pipe, the digest line on stdout.
"$FERRY" send "$T/src.img" | "$FERRY" receive "$T/piped.img" >"$T/out"
same_bytes "$T/src.img" "$T/piped.img"
[ "$(cat "$T/out")" = "$DIGEST  $T/piped.img" ] || fail "receive output: $(cat "$T/out")"
[ "$(du -k "$T/piped.img" | cut -f1)" -lt $((SIZE / 1024 - 1024)) ] || fail "holes not kept"

# An existing, larger destination full of old bytes: the source's zero ranges are zeroed,
# the bytes past the stream's volume are left alone.
head -c $((SIZE + 4096)) /dev/urandom >"$T/old.img"
tail -c 4096 "$T/old.img" >"$T/old.tail"
"$FERRY" receive -q "$T/old.img" <"$T/stream"
cmp -n "$SIZE" "$T/src.img" "$T/old.img" || fail "existing destination differs"
tail -c 4096 "$T/old.img" | cmp - "$T/old.tail" || fail "bytes past the volume touched"
# Into a seekable zstd image, and from an NBD source.
"$FERRY" receive -q "$T/recv.img.zst" <"$T/stream"
zstd -dc "$T/recv.img.zst" | cmp - "$T/src.img" || fail "received into a .zst"
start_nbdkit "$T/nbd.sock" file "$T/src.img"
"$FERRY" send "nbd+unix:///?socket=$T/nbd.sock" | "$FERRY" receive -q "$T/from-nbd.img"
same_bytes "$T/src.img" "$T/from-nbd.img"

# Too small: refused before anything is written.
head -c 1M /dev/urandom >"$T/small.img"
before=$(sha "$T/small.img")
expect_fail "$T/small.img: the destination is 1048576 bytes, smaller than the stream's volume ($SIZE bytes): nothing written" \
  "$FERRY" receive "$T/small.img" <"$T/stream"
[ "$(sha "$T/small.img")" = "$before" ] || fail "the small destination was written"

# Truncated streams: where it stopped, a new destination removed...
CUT=$(($(stat -c %s "$T/stream") * 2 / 3))
head -c $CUT "$T/stream" >"$T/cut"
expect_fail "stdin: the stream stops after $CUT bytes, inside the data of record" \
  "$FERRY" receive "$T/cut.img" <"$T/cut"
grep -qE "record [0-9]+ \(volume offset [0-9]+ of $SIZE\): truncated" "$T/err" ||
  fail "truncation message: $(cat "$T/err")"
grep -qF "removed the incomplete $T/cut.img" "$T/err" || fail "new destination not removed"
[ ! -e "$T/cut.img" ] || fail "truncated stream left a new destination"
# ... an existing one holds everything before the offset named.
truncate -s "$SIZE" "$T/partial.img"
expect_fail "truncated" "$FERRY" receive "$T/partial.img" <"$T/cut"
STOP=$(sed -nE 's/.*\(volume offset ([0-9]+) of .*/\1/p' "$T/err")
[ "$STOP" -gt 0 ] || fail "no stop offset: $(cat "$T/err")"
cmp -n "$STOP" "$T/src.img" "$T/partial.img" || fail "bytes before offset $STOP not written"
# Cut right after the header, and inside a record header.
head -c 64 "$T/stream" | expect_fail "stdin: the stream stops after 64 bytes, before record 0 (volume offset 0 of $SIZE): truncated" \
  "$FERRY" receive "$T/h.img"
head -c 100 "$T/stream" | expect_fail "stdin: the stream stops after 100 bytes, inside the header of record 0" \
  "$FERRY" receive "$T/h.img"
# The stream without its end record: every chunk arrived, the verification did not.
LEN=$(stat -c %s "$T/stream")
head -c $((LEN - 64)) "$T/stream" | expect_fail "stdin: the stream stops after $((LEN - 64)) bytes, before its end record: all $SIZE bytes of the volume arrived, but not the digest to verify them: truncated" \
  "$FERRY" receive "$T/noend.img"

# Corruption: a byte of compressed data, a byte of a record header, not a stream at all.
/usr/bin/python3 - "$T/stream" "$T/badchunk" "$T/badhead" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
pos, rec = 64, 0
while True:  # the first DATA record with a payload
    t, payload = d[pos], struct.unpack("<I", d[pos + 4:pos + 8])[0]
    if t == ord("D"):
        break
    pos += 64 + payload
    rec += 1
b = bytearray(d); b[pos + 64 + payload // 2] ^= 0x40; open(sys.argv[2], "wb").write(b)
b = bytearray(d); b[pos + 10] ^= 0x01; open(sys.argv[3], "wb").write(b)
print(rec)
PY
expect_fail "checksum mismatch: the chunk's data is corrupt" \
  "$FERRY" receive "$T/bad1.img" <"$T/badchunk"
grep -qE "stdin: record [0-9]+ \(data at volume offset [0-9]+\)" "$T/err" || fail "$(cat "$T/err")"
expect_fail "corrupt record header" "$FERRY" receive "$T/bad2.img" <"$T/badhead"
expect_fail "stdin: not a ferry send stream" "$FERRY" receive "$T/bad3.img" <"$T/src.img"
: | expect_fail "stdin: empty: no stream" "$FERRY" receive "$T/bad4.img"
for f in bad1 bad2 bad3 bad4 h noend; do [ ! -e "$T/$f.img" ] || fail "$f.img left behind"; done
expect_fail "missing SRC" "$FERRY" send
expect_fail "--level: 'fast' must be -7..-1 or 1..22" "$FERRY" send --level fast "$T/src.img"

# 64 GiB sparse: the holes are one record and never read.
truncate -s 64G "$T/big.img"
printf 'begin' | dd of="$T/big.img" conv=notrunc status=none
printf 'end' | dd of="$T/big.img" bs=1 seek=$(((64 << 30) - 3)) conv=notrunc status=none
"$FERRY" send --json "$T/big.img" 2>"$T/big.json" | "$FERRY" receive -q "$T/big.out"
grep -q '"records":3,' "$T/big.json" || fail "64 GiB: records: $(cat "$T/big.json")"
[ "$(du -k "$T/big.out" | cut -f1)" -le 256 ] || fail "64 GiB: holes not kept"
"$FERRY" verify -q "$T/big.img" "$T/big.out" || fail "64 GiB volume differs"
echo "send | receive ok"
