#!/usr/bin/env bash
# The nbd volume driver writes: parallel writes, write+FUA, zero (NO_HOLE / may-trim / fast),
# trim, flush — checked afterwards through other clients (nbdcopy on nbdkit memory, the
# backing file of qemu-nbd, qemu-img compare) against a model of what must be there.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
requires nbdkit nbdcopy qemu-nbd qemu-img

# model FILE OP OFF LEN [SRCFILE]: apply a write (from SRCFILE) or zero to the model image.
model() {
  /usr/bin/python3 - "$@" <<'PY'
import sys
path, op, off, ln = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(path, "r+b") as f:
    f.seek(off)
    f.write(open(sys.argv[5], "rb").read()[:ln] if op == "write" else bytes(ln))
PY
}

# nbdkit memory: 32 MiB of random data written by 16 threads in 256 KiB requests.
start_nbdkit "$T/mem.sock" memory size=32M
U="nbd+unix:///?socket=$T/mem.sock"
head -c 32M /dev/urandom >"$T/model"
"$VOLTOOL" put -t 16 -r 256K "$U" <"$T/model"
nbdcopy "$U" "$T/got"
same_bytes "$T/model" "$T/got"
"$VOLTOOL" -c 1 info "$U" | grep -q '^caps: write trim zero fast_zero extents fua flush cache multi_conn$' ||
  fail "nbdkit memory caps: $("$VOLTOOL" info "$U")"

head -c 5000 /dev/urandom >"$T/patch"
"$VOLTOOL" write --fua "$U" 1000003 <"$T/patch"; model "$T/model" write 1000003 5000 "$T/patch"
"$VOLTOOL" zero "$U" 4194304 1048576;            model "$T/model" zero 4194304 1048576 
"$VOLTOOL" zero --may-trim --fua "$U" 8M 2M;       model "$T/model" zero 8388608 2097152
"$VOLTOOL" zero --fast-zero "$U" 12M 64K;          model "$T/model" zero 12582912 65536
"$VOLTOOL" trim --fua "$U" 16M 1M # trimmed bytes are unspecified: overwrite them after
"$VOLTOOL" write "$U" 16M <"$T/patch";            model "$T/model" write 16777216 5000 "$T/patch"
"$VOLTOOL" zero "$U" 16782216 1043576;             model "$T/model" zero 16782216 1043576
"$VOLTOOL" flush "$U"
nbdcopy "$U" "$T/got"
same_bytes "$T/model" "$T/got"
# The may-trim zero on nbdkit memory leaves a hole: extents say so.
"$VOLTOOL" extents "$U" 8M 2M | grep -qx '8388608 2097152 3' || fail "zeroed range not a hole"

# A server without fast zero: --fast-zero is refused (ENOTSUP), nothing changes; a plain
# zero still works (passed through as NBD_CMD_WRITE_ZEROES).
start_nbdkit "$T/nofast.sock" --filter=nozero memory size=1M zeromode=plugin fastzeromode=none
NF="nbd+unix:///?socket=$T/nofast.sock"
head -c 1M /dev/urandom >"$T/nf"
"$VOLTOOL" put "$NF" <"$T/nf"
"$VOLTOOL" info "$NF" | grep -q '^caps: write trim zero extents' || fail "nozero caps"
expect_fail "$NF: fast zero is not supported" "$VOLTOOL" zero --fast-zero "$NF" 0 65536
nbdcopy "$NF" "$T/nf.back"
same_bytes "$T/nf" "$T/nf.back"
"$VOLTOOL" zero "$NF" 0 65536
nbdcopy "$NF" "$T/nf.back"
cmp -n 65536 "$T/nf.back" /dev/zero || fail "zero on the nozero server"
cmp -i 65536 "$T/nf" "$T/nf.back" || fail "zero went beyond its range"

# qemu-nbd over a raw file: what we wrote (FUA, flush) is in the file, seen without qemu.
head -c 16M /dev/urandom >"$T/q.raw"
cp "$T/q.raw" "$T/qmodel"
start_qemu_nbd "$T/q.sock" -f raw --cache=none "$T/q.raw"
Q="nbd+unix:///?socket=$T/q.sock"
"$VOLTOOL" write --fua "$Q" 65536 <"$T/patch"; model "$T/qmodel" write 65536 5000 "$T/patch"
"$VOLTOOL" zero --may-trim "$Q" 1M 1M;         model "$T/qmodel" zero 1048576 1048576
"$VOLTOOL" zero "$Q" 3M 512K;                  model "$T/qmodel" zero 3145728 524288
"$VOLTOOL" put -t 8 -r 64K "nbd+unix:///?socket=$T/q.sock" <"$T/qmodel"
"$VOLTOOL" zero --fua "$Q" 5M 4096;            model "$T/qmodel" zero 5242880 4096
"$VOLTOOL" flush "$Q"
same_bytes "$T/qmodel" "$T/q.raw"
qemu-img compare -f raw -F raw "$T/qmodel" "$T/q.raw" >/dev/null || fail "qemu-img compare"
echo "nbd driver writes ok"
