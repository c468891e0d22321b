#!/usr/bin/env bash
# A failing source (nbdkit error + delay filters): transient errors are retried and the clone
# converges; a source that stays down puts the hydrator in state "failed" with the reason
# (exit 1), and a restart once it is back completes the copy.  A reader through the clone
# gets the right bytes or an error, never wrong data.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-clone.sh"
requires nbdkit

head -c 8M /dev/urandom >"$T/src"
sock=$T/src.sock
# Reads fail at the given rate while $T/broken exists; every read is a little slow.
clone_nbdkit "$sock" "$T/nbdkit.pid" --filter=error --filter=delay file "$T/src" \
  error-pread=EIO error-pread-rate=100% error-pread-file="$T/broken" rdelay=2ms
src="nbd+unix:///?socket=$sock"

# 1. The source is down: state failed with the message, exit 1, nothing marked wrongly.
touch "$T/broken"
rc=0
"$FERRY" hydrate --source "$src" --map "$T/map" --json --workers 4 "$T/dst" \
  >"$T/fail.json" 2>"$T/fail.err" || rc=$?
[ $rc = 1 ] || fail "hydrate against a dead source exited $rc, expected 1"
[ "$(json_get "$T/fail.json" state)" = failed ] || fail "state is not failed"
grep -q "hydration failed (attempt 5 of 5)" "$T/fail.err" || { cat "$T/fail.err"; fail "no failure reason"; }
grep -q "Input/output error" "$T/fail.json" || fail "last_error lacks the source's error"
[ "$(json_get "$T/fail.json" regions_hydrated)" = 0 ] || fail "regions marked without data"

# 2. A reader while the source is down: only errors, never data (each read retries for
# the clone's --source-timeout, 0.05 s here, before it fails).
CLONETOOL_SOURCE_TIMEOUT=0.05 "$CLONETOOL" verify "$src" "$T/map" "$T/dst" "$T/src" >"$T/verify1" || fail "reader saw wrong data"
cat "$T/verify1"
grep -q "reads ok 0, failed [1-9][0-9]*, wrong 0" "$T/verify1" || fail "reads succeeded on a dead source"

# 3. Back up: the same command resumes and converges; the result is the source.
rm "$T/broken"
"$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/ok.json"
[ "$(json_get "$T/ok.json" state)" = converged ] || fail "not converged after restart"
same_bytes "$T/src" "$T/dst"
stop_nbdkit "$T/nbdkit.pid"

# 4. Flaky source (30% of reads fail): the copy engine and the clone retry; a reader through
# the clone sees the right bytes or EIO; the hydration converges to the source.
rm -f "$T/map" "$T/dst" "$T/src.sock"
clone_nbdkit "$sock" "$T/nbdkit2.pid" --filter=error --filter=delay file "$T/src" \
  error-pread=EIO error-pread-rate=30% rdelay=1ms
truncate -s 8M "$T/dst"
"$CLONETOOL" verify "$src" "$T/map" "$T/dst" "$T/src" >"$T/verify2" || fail "reader saw wrong data"
cat "$T/verify2"
grep -q "wrong 0" "$T/verify2" || fail "wrong data"
"$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/flaky.json" 2>"$T/flaky.err" || {
  # Five failures in a row of one request are possible but rare: a restart must finish it.
  cat "$T/flaky.err"
  "$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/flaky.json"
}
[ "$(json_get "$T/flaky.json" state)" = converged ] || fail "flaky source: not converged"
same_bytes "$T/src" "$T/dst"
echo "faults handled"
