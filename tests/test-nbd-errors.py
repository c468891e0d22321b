#!/usr/bin/python3
"""Requests the spec says to refuse, sent through python3-libnbd with its client-side checks
off: each gets the spec's error (EINVAL, ENOSPC, EOVERFLOW, EPERM, ENOTSUP) and the file is
unchanged (sha256)."""
import errno
import hashlib
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Server, make_file, read_file, expect_error, skip, wait_for, track  # noqa: E402

try:
    import nbd
except ImportError:
    skip("python3-libnbd not installed")

MiB = 1 << 20
SIZE = 40 * MiB
disk = os.path.join(T, "disk")
make_file(disk, SIZE, [(0, MiB), (34 * MiB, MiB)])


def sha():
    return hashlib.sha256(read_file(disk)).hexdigest()


before = sha()


def lax(uri, meta=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context("base:allocation")
    h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


def noext(ctx, off, entries, err):
    return 0


# Writable export that enforces a 512-byte minimum block size.
srv = Server("--min-block-size", "512", disk)
h = lax(srv.uri)
assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
# Past the end: EINVAL for reads, trims, cache, block status; ENOSPC for writes and zeroes.
expect_error(errno.EINVAL, h.pread, 4096, SIZE)
expect_error(errno.EINVAL, h.pread, 8192, SIZE - 4096)
expect_error(errno.ENOSPC, h.pwrite, b"x" * 4096, SIZE - 512)
expect_error(errno.ENOSPC, h.zero, 4096, SIZE)
expect_error(errno.EINVAL, h.trim, 4096, SIZE)
expect_error(errno.EINVAL, h.cache, 4096, SIZE)
expect_error(errno.EINVAL, h.block_status, 4096, SIZE, noext)
expect_error(errno.EINVAL, h.pread, 512, 2 ** 64 - 512)  # offset + length wraps
# Over the 32 MiB maximum block size.
expect_error(errno.EOVERFLOW, h.pread, 33 * MiB, 0)
# Misaligned to the advertised minimum block size.
expect_error(errno.EINVAL, h.pread, 100, 0)
expect_error(errno.EINVAL, h.pread, 512, 100)
expect_error(errno.EINVAL, h.pwrite, b"y" * 512, 100)
expect_error(errno.EINVAL, h.zero, 512, 1)
expect_error(errno.EINVAL, h.trim, 100, 0)
# Flags that do not belong to a command.
expect_error(errno.EINVAL, h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE)
expect_error(errno.EINVAL, h.pwrite, b"z" * 512, 0, nbd.CMD_FLAG_NO_HOLE)
expect_error(errno.EINVAL, h.trim, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
# The connection is still good after all that.
assert h.pread(512, 0) == read_file(disk)[:512]
h.shutdown()
del h

# BLOCK_STATUS without a negotiated metadata context.
h = lax(srv.uri, meta=False)
expect_error(errno.EINVAL, h.block_status, 4096, 0, noext)
h.shutdown()
del h
srv.stop()
assert sha() == before, "refused requests changed the file"

# Read-only export: every kind of write is EPERM.
ro = Server("--read-only", disk, name="ro")
h = lax(ro.uri)
assert h.is_read_only() == 1 and h.can_trim() == 0 and h.can_zero() == 0 and h.can_fua() == 0
expect_error(errno.EPERM, h.pwrite, b"w" * 4096, 0)
expect_error(errno.EPERM, h.zero, 4096, 0)
expect_error(errno.EPERM, h.trim, 4096, 0)
expect_error(errno.EPERM, h.pwrite, b"w" * 4096, 0, nbd.CMD_FLAG_FUA)
h.flush()  # harmless and advertised
assert h.pread(MiB, 0) == read_file(disk)[:MiB]
h.shutdown()
del h
ro.stop()
assert sha() == before, "read-only export changed the file"

# FAST_ZERO over a volume that cannot zero quickly: ENOTSUP at once, nothing changed;
# without the flag the same request succeeds (by writing zeroes).
if shutil.which("nbdkit"):
    ksock = os.path.join(T, "kit.sock")
    kpid = os.path.join(T, "kit.pid")
    kit_proc = track(subprocess.Popen(["nbdkit", "-f", "-U", ksock, "-P", kpid, "--filter=nozero",
                                 "memory", "size=8M", "zeromode=none"]))
    wait_for(lambda: os.path.exists(kpid) and os.path.getsize(kpid) > 0, kpid)
    kit = Server("nbd+unix:///?socket=" + ksock, name="slow")
    h = lax(kit.uri)
    h.pwrite(b"\x55" * MiB, 0)
    assert h.can_fast_zero() == 1  # advertised; refused per request
    expect_error(errno.ENOTSUP, h.zero, MiB, 0, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(MiB, 0) == b"\x55" * MiB, "FAST_ZERO refusal changed data"
    h.zero(MiB, 0)
    assert h.pread(MiB, 0) == bytes(MiB)
    h.shutdown()
    del h
    kit.stop()
    kit_proc.terminate()
    kit_proc.wait()
print("errors ok")
