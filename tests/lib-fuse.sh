# Helpers for tests/test-fuse-*.sh (source after functions.sh).
# Every mount a test makes is stopped and checked at exit: nothing may stay mounted or
# attached (fuse_assert_clean), whatever the test's outcome.
requires_root
requires fusermount3 losetup mountpoint
[ -c /dev/fuse ] || skip "/dev/fuse missing"
[ -x "$FERRY_FUSE" ] || skip "ferry-fuse not built (no fuse3)"

_fuse_mnts=()
_fuse_pids=()
_fuse_n=0

# Undo whatever a failed test left: filesystems mounted on our loop devices, the loop
# devices, the FUSE mounts, then the servers (by PID).
_fuse_cleanup() {
  local mnt dev pid i
  for mnt in "${_fuse_mnts[@]}"; do
    for dev in $(losetup -a | grep -F "($mnt/" | cut -d: -f1); do
      umount -l "$dev" 2>/dev/null
      losetup -d "$dev" 2>/dev/null
    done
    fusermount3 -u -z "$mnt" 2>/dev/null
  done
  for pid in "${_fuse_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || continue
    for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
  done
}
cleanup _fuse_cleanup

# fuse_start MNT ARGS...: run `ferry-fuse --foreground ARGS... MNT` in the background and
# wait until it is ready (its pidfile appears).  Sets FUSE_PID, FUSE_OUT, FUSE_ERR.
fuse_start() {
  local mnt=$1; shift
  mkdir -p "$mnt"
  _fuse_n=$((_fuse_n + 1))
  local pidf="$T/fuse.$_fuse_n.pid"
  FUSE_OUT="$T/fuse.$_fuse_n.out"
  FUSE_ERR="$T/fuse.$_fuse_n.err"
  _fuse_mnts+=("$mnt")
  "$FERRY_FUSE" --foreground --pidfile "$pidf" "$@" "$mnt" >"$FUSE_OUT" 2>"$FUSE_ERR" &
  FUSE_PID=$!
  _fuse_pids+=("$FUSE_PID")
  local i
  for ((i = 0; i < 600; i++)); do
    [ -s "$pidf" ] && return 0
    if ! kill -0 "$FUSE_PID" 2>/dev/null; then
      cat "$FUSE_ERR" >&2
      fail "ferry-fuse $* $mnt exited before the mount was ready"
    fi
    sleep 0.05
  done
  fail "ferry-fuse $* $mnt: not ready after 30 s"
}

# fuse_wait_exit: wait for the server started last; it must exit 0 (sanitizer reports and
# leaks make it fail).
fuse_wait_exit() {
  local rc=0
  wait "$FUSE_PID" || rc=$?
  if [ $rc -ne 0 ]; then
    cat "$FUSE_ERR" "$T"/sanitizer-* >&2 2>/dev/null
    fail "ferry-fuse exited $rc"
  fi
}

# fuse_stop MNT: SIGTERM the server started last, wait, check nothing is left.
fuse_stop() {
  kill -TERM "$FUSE_PID"
  fuse_wait_exit
  fuse_assert_clean "$1"
}

fuse_assert_clean() {
  local mnt=$1
  if grep -qF " $mnt " /proc/self/mountinfo; then fail "$mnt is still mounted"; fi
  if losetup -a | grep -qF "($mnt/"; then losetup -a >&2; fail "a loop device over $mnt/ is still attached"; fi
  return 0
}

# fuse_driver_ready URI: skip the test when the volume driver for URI is still a placeholder.
fuse_driver_ready() {
  local mnt="$T/probe" pidf="$T/probe.pid" rc=0 i
  mkdir -p "$mnt"
  _fuse_mnts+=("$mnt")
  "$FERRY_FUSE" --read-only --pidfile "$pidf" "$1" "$mnt" 2>"$T/probe.err" || rc=$?
  if [ $rc -ne 0 ]; then
    grep -q "not built yet\|not available yet" "$T/probe.err" && skip "the driver for $1 is not built yet"
    cat "$T/probe.err" >&2
    fail "ferry-fuse could not serve $1"
  fi
  kill -TERM "$(cat "$pidf")"
  for ((i = 0; i < 600; i++)); do [ -e "$pidf" ] || break; sleep 0.05; done
  fuse_assert_clean "$mnt"
}

# A daemonized ferry-fuse sends stderr to /dev/null: have the sanitizers (ASan/UBSan builds)
# write their reports to files instead, and fail the test if any report was written.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}log_path=$T/sanitizer-asan"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}${UBSAN_OPTIONS:+:}log_path=$T/sanitizer-ubsan"
fuse_check_sanitizer_logs() {
  local f
  for f in "$T"/sanitizer-*; do
    [ -e "$f" ] || continue
    cat "$f" >&2
    fail "sanitizer report in $f"
  done
}
