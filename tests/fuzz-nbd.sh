#!/usr/bin/env bash
# Fuzz ferry-nbd's handshake and transmission parsing with libFuzzer for N seconds
# (default 60).  Not part of `meson test`: ./quickstart test runs it after the sanitizer
# suite.  Usage: tests/fuzz-nbd.sh [SECONDS] [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
dir=${2:-build-fuzz}
command -v clang >/dev/null || { echo "fuzz-nbd: clang not installed, skipped"; exit 0; }

if [ ! -d "$dir" ]; then
  CC=clang meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$dir" nbd-server/fuzz-nbd >/dev/null

# A few valid sessions as seeds, so the fuzzer starts past the magic numbers.
corpus="$dir/fuzz-nbd-corpus"
mkdir -p "$corpus"
/usr/bin/python3 - "$corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def req(cmd, off, ln, flags=0, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, 1, off, ln) + payload
go = opt(7, struct.pack(">I", 0) + struct.pack(">HH", 1, 3))
meta = opt(10, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation")
cmds = (req(0, 0, 131072) + req(1, 4096, 512, 1, b"A" * 512) + req(6, 0, 4096, 2) +
        req(4, 8192, 4096) + req(7, 0, 262144, 8) + req(5, 0, 4096) + req(3, 0, 0) +
        req(0, 0, 65536, 4) + req(2, 0, 0))
seeds = {
    "plain": b"\x00" + struct.pack(">I", 3) + opt(1, b""),
    "go": b"\x00" + struct.pack(">I", 3) + opt(8) + meta + go + cmds,
    "simple": b"\x00" + struct.pack(">I", 3) + go + cmds,
    "options": b"\x06" + struct.pack(">I", 1) + opt(3) + opt(9, struct.pack(">II", 0, 0)) +
               opt(6, struct.pack(">I", 4) + b"fuzz" + struct.pack(">HHH", 2, 1, 2)) + opt(2),
    "readonly": b"\x09" + struct.pack(">I", 3) + opt(8) + go + cmds,
    # --tls=require: refused options, then STARTTLS (the fake upgrade succeeds), twice.
    "tls": b"\x20" + struct.pack(">I", 3) + opt(8) + opt(3) + opt(5) + opt(5) + opt(8) + meta +
           go + cmds,
    "tls-export-name": b"\x20" + struct.pack(">I", 3) + opt(1, b""),
    "tls-fails": b"\x60" + struct.pack(">I", 3) + opt(5) + go,
    "tls-on": b"\x10" + struct.pack(">I", 3) + opt(5, b"x") + opt(8) + go + cmds,
}
for name, data in seeds.items():
    open(os.path.join(d, name), "wb").write(data)
PY

echo "fuzz-nbd: running for ${seconds}s"
# -max_total_time bounds the run; timeout(1) is a backstop should the fuzzer itself hang.
ASAN_OPTIONS=detect_leaks=1 timeout -k 10 $((seconds + 60)) \
  "$dir/nbd-server/fuzz-nbd" -max_total_time="$seconds" -max_len=70000 -rss_limit_mb=2048 \
  -timeout=10 -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$dir/" "$corpus"
echo "fuzz-nbd: no crashes in ${seconds}s"
