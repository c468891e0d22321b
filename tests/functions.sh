# Shared helpers for tests/test-*.sh.  Source it first:  . "$TESTS_DIR/functions.sh"
# Each test gets a private temp dir ($T), removed at exit, and stops what it started by PID.
set -euo pipefail

: "${FERRY:?run through meson test}"
T=$(mktemp -d /tmp/ferry-test.XXXXXX)
_pids=()
_cleanups=()

_teardown() {
  local rc=$?
  set +e
  trap - ERR # a test's ERR trap (lib-tm.sh) has nothing to say about the cleanup
  local i
  for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}"; done
  # Newest first: a process started later may be a client of an earlier one (a clone of an
  # nbdkit source), and a server stopped first can wait for ever for its client to go.
  for ((i = ${#_pids[@]} - 1; i >= 0; i--)); do
    kill "${_pids[i]}" 2>/dev/null && wait "${_pids[i]}" 2>/dev/null
  done
  rm -rf "$T"
  exit $rc
}
trap _teardown EXIT

# Run a command at exit (cleanup in reverse order of registration).
cleanup() { _cleanups+=("$*"); }
# Stop this PID at exit.
track_pid() { _pids+=("$1"); }

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# requires CMD...: skip the test when a peer program is missing.
requires() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not installed"; done
}
requires_root() { [ "$(id -u)" = 0 ] || skip "needs root"; }

# wait_for_file PATH [SECONDS]: poll (no fixed sleep) until PATH exists.
wait_for_file() {
  local path=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 20; i++)); do
    [ -e "$path" ] && return 0
    sleep 0.05
  done
  fail "timed out waiting for $path"
}

# wait_for_pidfile PIDFILE [SECONDS]: wait until the file holds a PID, print it.
wait_for_pidfile() {
  local f=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 20; i++)); do
    if [ -s "$f" ]; then cat "$f"; return 0; fi
    sleep 0.05
  done
  fail "timed out waiting for pidfile $f"
}

# wait_for_server PID PIDFILE LOG WHAT: until the server PID (started in the background)
# writes PIDFILE once ready; it exiting first prints LOG and fails "WHAT exited at startup".
wait_for_server() {
  local pid=$1 pidf=$2 log=$3 what=$4 i
  for ((i = 0; i < 600; i++)); do
    [ -s "$pidf" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$what exited at startup"; }
    sleep 0.05
  done
  fail "$what did not write $pidf"
}

# A free TCP port on 127.0.0.1 (bound and released; small race accepted for tests).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nbdkit SOCKET PLUGIN ARGS...: nbdkit on a unix socket, in the background as our child
# (its --exit-with-parent implies --foreground), stderr appended to $T/nbdkit.log; returns once
# its pidfile says it serves.  Sets NBDKIT_PID (tracked: stopped at exit).
start_nbdkit() {
  local sock=$1; shift
  local pidf="$T/nbdkit.$RANDOM$RANDOM.pid"
  nbdkit --exit-with-parent -U "$sock" -P "$pidf" "$@" 2>>"$T/nbdkit.log" &
  NBDKIT_PID=$!
  track_pid "$NBDKIT_PID"
  wait_for_pidfile "$pidf" >/dev/null
  wait_for_file "$sock"
}

# expect_fail EXPECTED_TEXT CMD...: CMD must exit non-zero and print EXPECTED_TEXT on stderr.
expect_fail() {
  local want=$1; shift
  local rc=0
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -ne 0 ] || fail "expected failure but succeeded: $*"
  grep -qF -- "$want" "$T/err" || { cat "$T/err" >&2; fail "stderr of '$*' lacks: $want"; }
  echo "ok: refused ($rc): $(head -1 "$T/err")"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
same_bytes() { cmp "$1" "$2" || fail "$1 and $2 differ"; }

# skip_under_sanitizers: guest tests run once per suite, in the plain build.
skip_under_sanitizers() {
  [ "${FERRY_SANITIZE:-0}" = 0 ] || skip "runs in the plain build only (sanitizer build)"
}

# make_fake_ssh: $T/fake-ssh, exported as FERRY_SSH, stands in for ssh to a second host where
# there is none: it logs the host to $FAKE_SSH_LOG ($T/ssh.log) and each -L forward to
# $FAKE_SSH_LOG.forwards, runs the "remote" command here and turns each -L LOCAL:REMOTE into a
# symlink LOCAL -> REMOTE once REMOTE is a socket; the "remote" PATH has ferry-nbd.
make_fake_ssh() {
  cat >"$T/fake-ssh" <<'SSH'
#!/bin/bash
links=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) shift 2 ;;
    -L) links+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "fake-ssh: unexpected option $1" >&2; exit 255 ;;
    *) echo "$1" >> "$FAKE_SSH_LOG"; shift ;;
  esac
done
[ ${#links[@]} = 0 ] || printf '%s\n' "${links[@]}" >> "$FAKE_SSH_LOG.forwards"
for l in "${links[@]}"; do
  (while [ ! -S "${l#*:}" ]; do sleep 0.02; done; ln -s "${l#*:}" "${l%%:*}") &
done
exec bash -c "$1"
SSH
  chmod +x "$T/fake-ssh"
  export FERRY_SSH=$T/fake-ssh FAKE_SSH_LOG=$T/ssh.log
  PATH=$(dirname "$FERRY_NBD"):$PATH
  export PATH
}

# start_sshd: a real OpenSSH server on 127.0.0.1 (a free port, throwaway keys under $T, root
# by key only, stream-local forwarding allowed; the session's PATH has the built ferry
# programs).  Sets SSHD_PORT; writes $T/ssh, an ssh client for it (the key, the port, no
# known_hosts prompts: "$T/ssh root@127.0.0.1 CMD"); checks that a login works.
# write_sshd_config FILE PORT PIDFILE PATH [LINE...]: a test sshd's configuration: on
# 127.0.0.1:PORT, root with $T/host_key's server and $T/authorized_keys only, unix socket
# forwarding with stale sockets replaced, commands run with PATH; LINE... added.
write_sshd_config() {
  local file=$1 port=$2 pidf=$3 path=$4
  shift 4
  {
    cat <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $T/host_key
PidFile $pidf
AuthorizedKeysFile $T/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
SetEnv PATH=$path
CFG
    printf '%s\n' "$@"
  } >"$file"
}

start_sshd() {
  requires ssh ssh-keygen
  [ -x /usr/sbin/sshd ] || skip "openssh-server not installed"
  requires_root
  SSHD_PORT=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -f "$T/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$T/user_key"
  cp "$T/user_key.pub" "$T/authorized_keys"
  mkdir -p /run/sshd
  write_sshd_config "$T/sshd_config" "$SSHD_PORT" "$T/sshd.pid" \
    "$(dirname "$FERRY"):$(dirname "$FERRY_NBD"):/usr/sbin:/usr/bin:/sbin:/bin"
  /usr/sbin/sshd -D -e -f "$T/sshd_config" 2>"$T/sshd.log" &
  track_pid $!
  wait_for_pidfile "$T/sshd.pid" >/dev/null
  cat >"$T/ssh" <<SSH
#!/bin/sh
exec ssh -p $SSHD_PORT -i $T/user_key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \\
  -o UserKnownHostsFile=$T/known_hosts -o LogLevel=ERROR "\$@"
SSH
  chmod +x "$T/ssh"
  "$T/ssh" -o BatchMode=yes root@127.0.0.1 true || { cat "$T/sshd.log" >&2; fail "ssh login to the test's sshd"; }
}
