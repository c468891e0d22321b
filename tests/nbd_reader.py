#!/usr/bin/python3
"""A guest-like reader for the net tests: reads random ranges (4 KiB .. 1 MiB, 4 KiB aligned)
of an NBD export until STOPFILE exists, comparing every byte with EXPECTED, with a short
pause between reads.  Prints "reads N, errors E, wrong W, slowest S s"; exit 0 when every
read succeeded with the right bytes, 1 on a failed read (the error is printed), 3 on wrong
bytes.

  nbd_reader.py URI EXPECTED STOPFILE [PAUSE_SECONDS] [--allow-errors]

--allow-errors: failed reads are counted, not fatal (a source that stays down)."""
import os
import random
import sys
import time

import nbd

uri, expected, stopfile = sys.argv[1:4]
pause = float(sys.argv[4]) if len(sys.argv) > 4 and not sys.argv[4].startswith("--") else 0.05
allow_errors = "--allow-errors" in sys.argv
data = open(expected, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
rng = random.Random(1313)
reads = errors = wrong = 0
slowest = 0.0
while not os.path.exists(stopfile):
    n = 4096 * rng.randint(1, 256)
    off = 4096 * rng.randrange(0, (size - n) // 4096 + 1)
    t = time.monotonic()
    try:
        got = h.pread(n, off)
    except nbd.Error as e:
        errors += 1
        print("read %d+%d failed after %.1f s: %s" % (off, n, time.monotonic() - t, e),
              flush=True)
        if not allow_errors:
            break
        time.sleep(pause)
        continue
    slowest = max(slowest, time.monotonic() - t)
    reads += 1
    if got != data[off:off + n]:
        wrong += 1
        print("WRONG data at %d+%d" % (off, n), flush=True)
        break
    time.sleep(pause)
print("reads %d, errors %d, wrong %d, slowest %.2f s" % (reads, errors, wrong, slowest))
sys.exit(3 if wrong else 1 if errors and not allow_errors else 0)
