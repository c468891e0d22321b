# Helpers for tests/test-zst-*.sh (source after functions.sh): images to compress, and a
# small independent reader/writer of the zstd seekable format's seek table (python), so the
# tests can build seekable files from zstd(1)'s frames and damage ferry's in exact places.

requires zstd

# make_mixed PATH MIB: MIB 1 MiB chunks and a 12345-byte tail, mixing random data (R),
# compressible text (T), holes (H), zeroes written as data (Z) and random data with a zero
# run inside (M).  Deterministic.
make_mixed() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
M = 1 << 20
rng = random.Random(1414)
words = ["block", "offset", "frame", "INFO", "disk", "zstd", "seek", "=", "ferry", "vm"]
text = " ".join(rng.choice(words) for _ in range(400000)).encode()[:M]
kinds = [rng.choice("RTHZM") for _ in range(mib)]
kinds[0], kinds[1] = "H", "R"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, mib * M + 12345)
for i, k in enumerate(kinds):
    if k == "R":
        os.pwrite(fd, rng.randbytes(M), i * M)
    elif k == "T":
        os.pwrite(fd, text, i * M)
    elif k == "Z":
        os.pwrite(fd, bytes(M), i * M)
    elif k == "M":
        os.pwrite(fd, rng.randbytes(M // 2) + bytes(M // 4) + rng.randbytes(M // 4), i * M)
os.pwrite(fd, text[:12345], mib * M)
os.close(fd)
PY
}

# zst_seek PY-ARGS: the seek-table tool below.
#   zst_seek table FILE                  "index coff csize dsize checksum" per entry
#   zst_seek patch FILE OUT INDEX FIELD VALUE   FIELD csize|dsize|checksum of entry INDEX
#   zst_seek build OUT CHECKSUMS FRAME...       a seekable file of zstd frame files
#                                                 (CHECKSUMS 1: entries carry XXH64 low 32)
zst_seek() {
  /usr/bin/python3 - "$@" <<'PY'
import struct, sys
MAGIC_SKIP, MAGIC_SEEK = 0x184D2A5E, 0x8F92EAB1

def read_table(data):
    n, desc, magic = struct.unpack("<IBI", data[-9:])
    assert magic == MAGIC_SEEK, "no seek table"
    es = 12 if desc & 0x80 else 8
    size = 8 + n * es + 9
    toff = len(data) - size
    assert struct.unpack("<I", data[toff:toff + 4])[0] == MAGIC_SKIP
    entries, coff = [], 0
    for i in range(n):
        e = toff + 8 + i * es
        c, d = struct.unpack("<II", data[e:e + 8])
        k = struct.unpack("<I", data[e + 8:e + 12])[0] if es == 12 else None
        entries.append([coff, c, d, k, e])
        coff += c
    return entries

cmd = sys.argv[1]
if cmd == "table":
    for i, (coff, c, d, k, _) in enumerate(read_table(open(sys.argv[2], "rb").read())):
        print(i, coff, c, d, "-" if k is None else "%08x" % k)
elif cmd == "patch":
    data = bytearray(open(sys.argv[2], "rb").read())
    i, field, value = int(sys.argv[4]), sys.argv[5], int(sys.argv[6], 0)
    e = read_table(data)[i][4] + {"csize": 0, "dsize": 4, "checksum": 8}[field]
    struct.pack_into("<I", data, e, value)
    open(sys.argv[3], "wb").write(data)
elif cmd == "build":
    out, sums, frames = sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
    body, table = b"", b""
    import subprocess
    for f in frames:
        frame = open(f, "rb").read()
        raw = subprocess.run(["zstd", "-dcq"], input=frame, capture_output=True, check=True).stdout
        table += struct.pack("<II", len(frame), len(raw))
        if sums:  # the frame's own content checksum is XXH64's low 32 bits: zstd -c --check
            chk = subprocess.run(["zstd", "-q", "-c", "--check", "-1"], input=raw,
                                 capture_output=True, check=True).stdout
            table += chk[-4:]
        body += frame
    n = len(frames)
    footer = struct.pack("<IBI", n, 0x80 if sums else 0, MAGIC_SEEK)
    frame = struct.pack("<II", MAGIC_SKIP, len(table) + 9) + table + footer
    open(out, "wb").write(body + frame)
PY
}
