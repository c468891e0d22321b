#!/usr/bin/env bash
# ferry-nbd serving a clone while it hydrates: nbdcopy, nbdinfo --map (base:allocation and
# ferry:hydrated), qemu-img compare and qemu-io return the source's bytes before the
# hydrator is done; writes land on the destination; `ferry wait` on --control reports
# convergence; SIGTERM commits the map and the destination holds everything.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdinfo nbdcopy qemu-img qemu-io

# 32 MiB source: 8 MiB random data, 8 MiB hole, 8 MiB data, 8 MiB hole.
head -c 8M /dev/urandom >"$T/a"
head -c 8M /dev/urandom >"$T/b"
truncate -s 32M "$T/src"
dd if="$T/a" of="$T/src" conv=notrunc status=none
dd if="$T/b" of="$T/src" bs=1M seek=16 conv=notrunc status=none
truncate -s 32M "$T/dest"
# Throttled so the clients below really run while it is hydrating.
start_ferry_nbd "$T/sock" --control "$T/ctl" --source "$T/src" --map "$T/map" \
  --rate 1M --region-size 64K "$T/dest"

"$FERRY" status --json "$T/ctl" >"$T/st.json"
grep -q '"state": *"hydrating"' "$T/st.json" || { cat "$T/st.json"; fail "not hydrating"; }

# ferry:hydrated: while throttled, part of the destination is not hydrated yet.
nbdinfo --map=ferry:hydrated "$NBD_URI" >"$T/hmap"
awk '$3 == 0' "$T/hmap" | grep -q . || { cat "$T/hmap"; fail "nothing reported unhydrated while throttled"; }
nbdinfo --map "$NBD_URI" | grep -q 'data' || fail "base:allocation map"

# Real clients read the source's bytes through the clone while it hydrates.
nbdcopy "$NBD_URI" "$T/copy1"
same_bytes "$T/src" "$T/copy1"
qemu-img compare -f raw "$T/src" -F raw "$NBD_URI" >/dev/null || fail "qemu-img compare"
"$FERRY" status --json "$T/ctl" | grep -q '"state": *"hydrating"\|"state": *"converged"' || fail "status"

# python3-libnbd: both metadata contexts in one BLOCK_STATUS (REQ_ONE: one extent each),
# structured reads with hole chunks for the source's holes, bytes equal to the source.
/usr/bin/python3 - "$T/src" "$T/sock" <<'PY'
import sys, nbd
src = open(sys.argv[1], "rb").read()
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.add_meta_context("ferry:hydrated")
h.connect_unix(sys.argv[2])
assert h.can_meta_context("ferry:hydrated") == 1
seen = {}
def ext(ctx, off, entries, err):
    seen[ctx] = list(entries)
    return 0
h.block_status(4 << 20, 0, ext, nbd.CMD_FLAG_REQ_ONE)
assert set(seen) == {"base:allocation", "ferry:hydrated"}, seen
assert all(len(e) == 2 and e[0] <= 4 << 20 for e in seen.values()), seen
chunks = []
buf = bytearray(4 << 20)
def chunk(b, off, status, err):
    chunks.append(status)
    buf[off - (6 << 20):off - (6 << 20) + len(b)] = b
    return 0
h.pread_structured(4 << 20, 6 << 20, chunk)  # 2 MiB data, then 2 MiB of the source's hole
assert bytes(buf) == src[6 << 20:10 << 20], "clone read differs"
assert nbd.READ_HOLE in chunks, chunks
h.shutdown()
PY

# Writes through the clone: qemu-io write, write -z, discard; read back.
qemu-io -f raw -c 'write -P 0x5a 1M 64k' -c 'write -z 2M 64k' -c 'discard 17M 64k' \
  -c 'read -P 0x5a 1M 64k' -c 'read -P 0 2M 64k' "$NBD_URI" >/dev/null || fail "qemu-io"
cp "$T/src" "$T/want"
/usr/bin/python3 - "$T/want" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1 << 20); f.write(b"\x5a" * 65536)
    f.seek(2 << 20); f.write(bytes(65536))
PY
nbdcopy "$NBD_URI" "$T/copy2"
# The discarded range may read anything; compare around it.
cmp -n $((17 << 20)) "$T/want" "$T/copy2" || fail "clone differs before the discard"
cmp -i $(((17 << 20) + 65536)) "$T/want" "$T/copy2" || fail "clone differs after the discard"

# Unthrottle and wait for convergence through the control socket.
"$FERRY" set-rate "$T/ctl" 0 >/dev/null
"$FERRY" wait --timeout 60 "$T/ctl" || fail "ferry wait"
nbdinfo --map=ferry:hydrated "$NBD_URI" >"$T/hmap2"
[ "$(awk '$3 != 1' "$T/hmap2" | wc -l)" = 0 ] || { cat "$T/hmap2"; fail "not all hydrated"; }

stop_ferry_nbd
cmp -n $((17 << 20)) "$T/want" "$T/dest" || fail "destination differs"
cmp -i $(((17 << 20) + 65536)) "$T/want" "$T/dest" || fail "destination differs after the discard"
echo "clone ok"
