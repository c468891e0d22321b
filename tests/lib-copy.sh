# Helpers for tests/test-copy-*.sh (source after functions.sh).

# make_image PATH MIB: a deterministic image of MIB 1 MiB chunks plus a 1000-byte tail, mixing
# random data (R), zero bytes written as data (Z: allocated zeroes), holes (H) and chunks of
# random data with a 256 KiB zero run inside (M).  Writes PATH.map: "index kind" per chunk.
make_image() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
M = 1 << 20
rng = random.Random(4242)
kinds = [rng.choice("RZHM") for _ in range(mib)]
kinds[0], kinds[-1] = "R", "H"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, mib * M + 1000)
with open(path + ".map", "w") as m:
    for i, k in enumerate(kinds):
        m.write("%d %s\n" % (i, k))
        if k == "R":
            os.pwrite(fd, rng.randbytes(M), i * M)
        elif k == "Z":
            os.pwrite(fd, bytes(M), i * M)
        elif k == "M":
            os.pwrite(fd, rng.randbytes(M // 2) + bytes(M // 4) + rng.randbytes(M // 4), i * M)
os.pwrite(fd, rng.randbytes(1000), mib * M)
os.close(fd)
PY
}

# check_holes OUT MAP: Z and H chunks (and the zero quarter of M chunks) must be holes in OUT,
# R chunks data (SEEK_DATA / SEEK_HOLE).
check_holes() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, sys
M = 1 << 20
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
def is_hole(a, b):   # no data in [a, b)
    try:
        return os.lseek(fd, a, os.SEEK_DATA) >= b
    except OSError:  # ENXIO: only a hole up to EOF
        return True
def is_data(a, b):   # all data in [a, b)
    return os.lseek(fd, a, os.SEEK_DATA) == a and os.lseek(fd, a, os.SEEK_HOLE) >= b
bad = []
for line in open(sys.argv[2]):
    i, k = line.split()
    a = int(i) * M
    if k in "ZH" and not is_hole(a, a + M):
        bad.append("chunk %s (%s) is not a hole" % (i, k))
    if k == "M" and not is_hole(a + M // 2, a + 3 * M // 4):
        bad.append("zero run of chunk %s is not a hole" % i)
    if k == "R" and not is_data(a, a + M):
        bad.append("chunk %s (R) is not all data" % i)
if bad:
    print("\n".join(bad[:10]), file=sys.stderr)
    sys.exit(1)
PY
}

# json_field FILE KEY: one number from ferry copy --json.
json_field() {
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# expected_counts MAP: "DATA ZERO": bytes ferry must read (R, Z, M chunks and the tail: the
# source reports them as data) and bytes it must not write as data (Z, H chunks and M's run).
expected_counts() {
  awk '{ if ($2=="R") r+=1; else if ($2=="Z") z+=1; else if ($2=="M") m+=1; else h+=1 }
       END { M=1048576; printf "%d %d\n", (r+z+m)*M+1000, (z+h)*M + m*M/4 }' "$1"
}

# expect_rc RC TEXT CMD...: CMD exits with RC and prints TEXT on stderr.
expect_rc() {
  local want_rc=$1 want=$2; shift 2
  local rc=0
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -eq "$want_rc" ] || { cat "$T/err" >&2; fail "'$*' exited $rc, want $want_rc"; }
  grep -qF -- "$want" "$T/err" || { cat "$T/err" >&2; fail "stderr of '$*' lacks: $want"; }
  echo "ok: refused ($rc): $(head -1 "$T/err")"
}

