#!/usr/bin/python3
"""Every NBD command and flag through python3-libnbd against ferry-nbd over a sparse file:
READ (structured data + hole chunks, DF), WRITE (+FUA), FLUSH, TRIM, WRITE_ZEROES (NO_HOLE,
FAST_ZERO), BLOCK_STATUS (REQ_ONE), CACHE, and the option phase: LIST, INFO,
LIST_META_CONTEXT, export-name refusal.  Every result is checked against the file."""
import errno
import os
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Server, fail, make_file, read_file, expect_error  # noqa: E402

try:
    import nbd
except ImportError:
    from nbdtest import skip
    skip("python3-libnbd not installed")

MiB = 1 << 20
SIZE = 16 * MiB
disk = os.path.join(T, "disk")
want = bytearray(make_file(disk, SIZE, [(1 * MiB, 256 * 1024), (8 * MiB, 64 * 1024)]))

srv = Server("--export-name", "vol", "--description", "a test volume", disk)


def connect(name="vol", meta=("base:allocation",)):
    h = nbd.NBD()
    for m in meta:
        h.add_meta_context(m)
    h.set_export_name(name)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, srv.sock))
    return h


h = connect()
assert h.get_size() == SIZE
assert h.is_read_only() == 0
for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn",
            "can_cache", "can_df"):
    assert getattr(h, cap)() == 1, cap
assert h.can_meta_context("base:allocation") == 1
assert h.can_meta_context("ferry:hydrated") == 0  # a plain volume has no hydration map

# READ: whole disk, simple comparison.
assert h.pread(SIZE, 0) == bytes(want), "read differs"

# READ, structured: a range over data and holes comes back as data and hole chunks.
chunks = []


def chunk(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
    return 0


got = bytearray(2 * MiB)


def collect(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
    got[offset:offset + len(buf)] = buf
    return 0


h.pread_structured(2 * MiB, 0, collect)
assert bytes(got) == bytes(want[:2 * MiB]), "structured read differs"
kinds = {s for _, _, s in chunks}
assert nbd.READ_DATA in kinds and nbd.READ_HOLE in kinds, chunks
holes = [(o, n) for o, n, s in chunks if s == nbd.READ_HOLE]
assert (0, MiB) in holes, holes
# DF: exactly one data chunk, zeroes included.
chunks.clear()
h.pread_structured(2 * MiB, 0, chunk, nbd.CMD_FLAG_DF)
assert chunks == [(0, 2 * MiB, nbd.READ_DATA)], chunks

# WRITE and WRITE+FUA land in the file.
data = os.urandom(128 * 1024)
h.pwrite(data, 3 * MiB)
h.pwrite(data, 5 * MiB + 512, nbd.CMD_FLAG_FUA)
want[3 * MiB:3 * MiB + len(data)] = data
want[5 * MiB + 512:5 * MiB + 512 + len(data)] = data
h.flush()
assert read_file(disk) == bytes(want), "write/FUA not in the file"

# BLOCK_STATUS: extents match the file; REQ_ONE gives exactly one extent within the length.
ext = []


def extents(ctx, offset, entries, err):
    ext.append((ctx, offset, list(entries)))
    return 0


h.block_status(SIZE, 0, extents)
ctx, off, e = ext[0]
assert ctx == "base:allocation" and off == 0
assert e[0] == MiB and e[1] == 3, e  # hole,zero up to the first data
assert e[3] == 0, e  # then data
ext.clear()
h.block_status(512 * 1024, 0, extents, nbd.CMD_FLAG_REQ_ONE)
assert len(ext) == 1 and len(ext[0][2]) == 2, ext
assert ext[0][2] == [512 * 1024, 3], ext
ext.clear()
h.block_status(4 * MiB, MiB, extents, nbd.CMD_FLAG_REQ_ONE)
assert ext[0][2] == [256 * 1024, 0], ext

# TRIM: reads back as zero (file punches holes) and becomes a hole.
h.trim(128 * 1024, 3 * MiB)
want[3 * MiB:3 * MiB + 128 * 1024] = bytes(128 * 1024)
assert h.pread(128 * 1024, 3 * MiB) == bytes(128 * 1024)
ext.clear()
h.block_status(128 * 1024, 3 * MiB, extents, nbd.CMD_FLAG_REQ_ONE)
assert ext[0][2] == [128 * 1024, 3], ext

# WRITE_ZEROES: plain, NO_HOLE, FAST_ZERO, with FUA.
h.zero(64 * 1024, 8 * MiB)
h.zero(4096, 5 * MiB + 512, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, 5 * MiB + 8192, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
for off, n in ((8 * MiB, 64 * 1024), (5 * MiB + 512, 4096), (5 * MiB + 8192, 4096)):
    want[off:off + n] = bytes(n)
assert h.pread(SIZE, 0) == bytes(want), "zeroes"

# CACHE succeeds and changes nothing; FLUSH.
h.cache(4 * MiB, 0)
h.flush()
assert read_file(disk) == bytes(want), "file differs after flush"

# Zero-length requests are answered, not dropped.
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ZERO_SIZE)
assert h.pread(0, 0) == b""
h.pwrite(b"", 0)
h.shutdown()
del h

# Option phase: LIST, INFO (name, description, block sizes), LIST_META_CONTEXT.
o = nbd.NBD()
o.set_opt_mode(True)
o.set_full_info(True)
o.connect_unix(srv.sock)
listed = []
o.opt_list(lambda name, desc: listed.append((name, desc)) or 0)
assert listed == [("vol", "a test volume")], listed
ctxs = []
o.set_export_name("vol")
o.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
assert ctxs == ["base:allocation"], ctxs
o.opt_info()
assert o.get_size() == SIZE
assert o.get_export_description() == "a test volume"
assert o.get_canonical_export_name() == "vol"
assert o.get_block_size(nbd.SIZE_MINIMUM) == 1
assert o.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert o.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB
# Another export name is refused (NBD_REP_ERR_UNKNOWN), and the session goes on.
o.set_export_name("other")
expect_error(errno.ENOENT, o.opt_info)
o.set_export_name("")  # the default export is ours too
o.opt_go()
assert o.pread(4096, 0) == bytes(want[:4096])
o.shutdown()
del o

# NBD_OPT_EXPORT_NAME (the old way): libnbd falls back to it when GO is off.
x = nbd.NBD()
x.set_export_name("vol")
x.set_handshake_flags(0)  # no fixed newstyle: only EXPORT_NAME
x.connect_unix(srv.sock)
assert x.pread(4096, MiB) == bytes(want[MiB:MiB + 4096])
del x
x = nbd.NBD()
x.set_export_name("nope")
x.set_handshake_flags(0)
try:
    x.connect_unix(srv.sock)
    fail("EXPORT_NAME of an unknown export was accepted")
except nbd.Error:
    pass
del x

srv.stop()
assert read_file(disk) == bytes(want), "file differs after shutdown"
print("commands ok")
