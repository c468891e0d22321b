#!/usr/bin/env bash
# Crash safety: `ferry hydrate` and a guest writer through the clone (tests/clonetool.c, which
# logs every write once a flush acknowledged it) are killed with SIGKILL at 20 random moments
# and restarted each time.  Each writer start checks, through the clone, every write its log
# says was flushed (no flushed write lost); the final destination must equal the expected
# image byte for byte; and the source (nbdkit + stats filter) must have been read no more
# than 1.2x the volume's data in total.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-clone.sh"
requires nbdkit

size=$((256 << 20))
writes=1500
seed=7
head -c $size /dev/urandom >"$T/src"
truncate -s $size "$T/dst"
"$CLONETOOL" expected "$T/src" "$T/expected" $writes $seed
sock=$T/src.sock
clone_nbdkit "$sock" "$T/nbdkit.pid" --filter=stats file "$T/src" \
  statsfile="$T/stats" statsappend=true
src="nbd+unix:///?socket=$sock"

kills=0
for ((i = 1; i <= 20; i++)); do
  if ((i % 2)); then
    "$FERRY" hydrate --source "$src" --map "$T/map" --rate 8M --workers 2 \
      --request-size 256K --commit-interval 0.2 "$T/dst" 2>>"$T/hydrate.log" &
  else
    "$CLONETOOL" writer "$src" "$T/map" "$T/dst" "$T/log" $writes $seed $((8 << 20)) \
      >>"$T/writer.out" 2>>"$T/writer.log" &
  fi
  pid=$!
  # A random moment between 0.2 and 0.7 s into the run (deliberate: this is the crash).
  sleep "0.$((2 + RANDOM % 6))$((RANDOM % 10))"
  if kill -KILL $pid 2>/dev/null; then kills=$((kills + 1)); fi
  rc=0; wait $pid || rc=$?
  # Killed (137) is expected; any other failure (e.g. a lost write: 3) is not.
  [ $rc = 137 ] || [ $rc = 0 ] || { cat "$T/writer.log" "$T/hydrate.log" >&2; fail "run $i exited $rc"; }
done
echo "$kills runs killed"
[ $kills -ge 15 ] || fail "only $kills of 20 runs were still running when killed"
grep "verified" "$T/writer.out" | tr '\n' ' '; echo

# Unlimited: the writer checks all flushed writes, finishes the rest and waits until the
# clone has converged.
"$CLONETOOL" writer "$src" "$T/map" "$T/dst" "$T/log" $writes $seed 0 >"$T/final.out" ||
  { cat "$T/final.out"; fail "final writer run failed"; }
cat "$T/final.out"
"$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/last.json"
[ "$(json_get "$T/last.json" state)" = converged ] || fail "not converged"
[ "$(json_get "$T/last.json" bytes_copied)" = 0 ] || fail "converged map still copied data"
same_bytes "$T/expected" "$T/dst"

stop_nbdkit "$T/nbdkit.pid"
read_bytes=$(nbdkit_read_bytes "$T/stats")
echo "source read $read_bytes bytes in total for $size bytes of data ($((read_bytes * 100 / size))%)"
[ "$read_bytes" -ge "$size" ] || fail "read less than the data?"
[ "$read_bytes" -le $((size * 12 / 10)) ] || fail "read more than 1.2x the data"
echo "crash test ok"
