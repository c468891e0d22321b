# Helpers for tests/test-tm-*.sh: the OpenNebula ferry TM driver without oned.  Source after
# functions.sh.
#
# Three hosts on this machine: the front-end "fe" and "hostA", "hostB".  Each is a mount
# namespace (held by a sleeping process) in which $DS (the datastore location, the same path on
# every host as in OpenNebula: TransferManager.cc's system_dir) is that host's own directory
# $T/hosts/NAME/ds, and each runs a real sshd on 127.0.0.1 inside its namespace; $SSH, the ssh
# the driver uses (scripts_common.sh: SSH=${SSH:-ssh}) and gives the hosts (FERRY_HOST_SSH),
# takes a host name and connects to that host's port.  The actions run in fe's namespace with
# oned's argument lines, `onevm`/`onedatastore` stubs printing fixture XML, and the driver
# installed under $REMOTES/tm/ferry beside a base driver stub $REMOTES/tm/ssh (tests/tm-base:
# it records its calls and does what the ssh driver's mv and delete do, in a few lines).
#
#   tm_setup                       the hosts, sshds, driver, stubs
#   on_host HOST CMD...            CMD in HOST's namespace
#   tm ACTION ARGS...              run the driver's ACTION on fe (stdin passed); sets TM_OUT,
#                                  TM_ERR, TM_RC, TM_SECONDS
#   vm_xml ID [DISK_XML...]        the fixture `onevm show -x ID` prints
#   host_down HOST / host_up HOST  stop / start HOST's sshd (unreachable by ssh)
#   tm_assert_clean                no ferry process, FUSE mount or loop device of this test
requires_root
requires ssh ssh-keygen unshare nsenter xmllint setsid
# A command that fails under set -e says where (in the test or a helper).
set -E
_tm_err_said=0
trap '_tm_rc=$?; [ $_tm_rc = 0 ] || [ $BASH_SUBSHELL != 0 ] || [ $_tm_err_said = 1 ] ||
  [[ $BASH_COMMAND == exit* ]] || { _tm_err_said=1;
  echo "FAIL: ${BASH_SOURCE[0]##*/}:$LINENO: \`$BASH_COMMAND\` exited $_tm_rc" >&2; }' ERR
[ -x /usr/sbin/sshd ] || skip "openssh-server not installed"
[ -c /dev/fuse ] || skip "/dev/fuse missing"
[ -x "$FERRY_FUSE" ] || skip "ferry-fuse not built (no fuse3)"

DS=$T/one/datastores
REMOTES=$T/remotes
TM_HOSTS=(fe hostA hostB)
declare -A _tm_holder _tm_sshd_pid

_tm_cleanup() {
  local h pid mnt i f
  # A failed test shows what the driver's processes said (rc: functions.sh's _teardown).
  if [ "${rc:-0}" != 0 ]; then
    for f in "$T"/hosts/*/ds/*/*/.ferry/*/log "$T"/hosts/*/ds/*/*/.ferry/*/keeper.log; do
      [ -s "$f" ] || continue
      echo "--- ${f#"$T"/hosts/}" >&2
      tail -15 "$f" >&2
    done
  fi
  # Whatever of ours still runs (every process the driver started names $T in its arguments).
  for pid in $(pgrep -f -- "$T/" 2>/dev/null); do
    [ "$pid" = $$ ] && continue
    grep -qF "$T/" "/proc/$pid/cmdline" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null
  done
  for h in "${TM_HOSTS[@]}"; do
    [ -n "${_tm_holder[$h]:-}" ] || continue
    for mnt in $(nsenter -t "${_tm_holder[$h]}" -m -- awk -v t="$T/" '$9 == "fuse.ferry" && index($5, t) == 1 { print $5 }' /proc/self/mountinfo 2>/dev/null); do
      nsenter -t "${_tm_holder[$h]}" -m -- umount -l "$mnt" 2>/dev/null
    done
  done
  sleep 0.2
  for pid in $(pgrep -f -- "$T/" 2>/dev/null); do
    [ "$pid" = $$ ] && continue
    grep -qF "$T/" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  for h in "${TM_HOSTS[@]}"; do
    [ -n "${_tm_sshd_pid[$h]:-}" ] && kill "${_tm_sshd_pid[$h]}" 2>/dev/null
    [ -n "${_tm_holder[$h]:-}" ] && kill "${_tm_holder[$h]}" 2>/dev/null
  done
  return 0
}

on_host() {
  local h=$1
  shift
  nsenter -t "${_tm_holder[$h]}" -m -- "$@"
}

# The ssh the driver and the hosts use: the first operand is the host name.
_tm_write_ssh() {
  cat >"$T/bin/ssh" <<EOF
#!/usr/bin/env bash
args=()
while [ \$# -gt 0 ]; do
  case \$1 in
  -[bcDEeFIiJLlmOopQRSWw]) args+=("\$1" "\$2"); shift 2 ;;
  --) shift; break ;;
  -*) args+=("\$1"); shift ;;
  *) break ;;
  esac
done
host=\$1
shift
if [ ! -s "$T/hosts/\$host/port" ]; then
  echo "ssh: Could not resolve hostname \$host: Name or service not known" >&2
  exit 255
fi
exec /usr/bin/ssh -p "\$(cat "$T/hosts/\$host/port")" -i "$T/user_key" -o IdentitiesOnly=yes \\
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \\
  -o ConnectTimeout=5 "\${args[@]}" root@127.0.0.1 "\$@"
EOF
  chmod +x "$T/bin/ssh"
  # The front-end's: as OpenNebula's drivers have it (share/ssh/bin/ssh adds ControlMaster=auto
  # to the ControlPersist of oneadmin's ssh config), one persistent connection per host; the
  # masters are started by tm_setup and host_up, so no action's command line lingers as one.
  cat >"$T/bin/ssh-fe" <<EOF
#!/bin/sh
exec "$T/bin/ssh" -o ControlMaster=no -o "ControlPath=$T/socks/%C" "\$@"
EOF
  chmod +x "$T/bin/ssh-fe"
}

_tm_master() {
  mkdir -p "$T/socks"
  "$T/bin/ssh" -o ControlMaster=yes -o "ControlPath=$T/socks/%C" -o ControlPersist=yes -N -f "$1" ||
    fail "ssh master to $1"
}

_tm_start_sshd() {
  local h=$1 port
  port=$(free_port)
  write_sshd_config "$T/hosts/$h/sshd_config" "$port" "$T/hosts/$h/sshd.pid" \
    "$T/bin:/usr/sbin:/usr/bin:/sbin:/bin" "AllowTcpForwarding yes" "MaxStartups 200" \
    "MaxSessions 100"
  rm -f "$T/hosts/$h/sshd.pid"
  on_host "$h" /usr/sbin/sshd -D -e -f "$T/hosts/$h/sshd_config" 2>>"$T/hosts/$h/sshd.log" &
  _tm_sshd_pid[$h]=$!
  wait_for_pidfile "$T/hosts/$h/sshd.pid" >/dev/null
  echo "$port" >"$T/hosts/$h/port"
}

# host_down HOST: nobody reaches HOST by ssh any more: its sshd stops and so does every
# connection into it (the sessions are the listener's children), the front-end's included.
host_down() {
  local listener=${_tm_sshd_pid[$1]} pid
  "$T/bin/ssh" -o "ControlPath=$T/socks/%C" -O exit "$1" 2>/dev/null
  for pid in $(pgrep -P "$listener"); do kill "$pid" 2>/dev/null; done
  kill "$listener" 2>/dev/null || true
  wait "$listener" 2>/dev/null || true
}
host_up() {
  _tm_start_sshd "$1"
  _tm_master "$1"
}

# tm_config KEY VALUE: a setting of the installed ferryrc.
tm_config() { sed -i "s|^$1=.*|$1=$2|" "$REMOTES/tm/ferry/ferryrc"; }

tm_setup() {
  cleanup _tm_cleanup
  mkdir -p "$T/bin" "$DS" "$REMOTES/tm"
  ssh-keygen -q -t ed25519 -N '' -f "$T/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$T/user_key"
  cp "$T/user_key.pub" "$T/authorized_keys"
  mkdir -p /run/sshd
  _tm_write_ssh
  local h
  for h in "${TM_HOSTS[@]}"; do
    mkdir -p "$T/hosts/$h/ds"
    unshare -m --propagation private -- sleep 100000 &
    _tm_holder[$h]=$!
    local i
    for ((i = 0; i < 100; i++)); do
      [ "$(readlink "/proc/${_tm_holder[$h]}/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] && break
      sleep 0.02
    done
    on_host "$h" mount --bind "$T/hosts/$h/ds" "$DS"
    _tm_start_sshd "$h"
  done
  # The ferry programs, where ferryrc's FERRY_BIN_DIR says.
  ln -s "$FERRY" "$FERRY_NBD" "$FERRY_FUSE" "$T/bin/"
  # The driver as `meson install` lays it out, and the base driver stub.
  cp -a "$SRCDIR/opennebula/tm/ferry" "$REMOTES/tm/ferry"
  cp -a "$TESTS_DIR/tm-base/ssh" "$REMOTES/tm/ssh"
  sed -e "s|^BASE_TM=.*|BASE_TM=ssh|" -e "s|^FERRY_BIN_DIR=.*|FERRY_BIN_DIR=$T/bin|" \
    -e "s|^FERRY_HOST_SSH=.*|FERRY_HOST_SSH=$T/bin/ssh|" \
    -e "s|^FERRY_TUNNEL_DIR=.*|FERRY_TUNNEL_DIR=$T/tun|" \
    "$SRCDIR/opennebula/tm/ferry/ferryrc" >"$REMOTES/tm/ferry/ferryrc"
  mkdir "$T/tun" # the tunnels' ends: tm_assert_clean checks that none is left
  # oned's CLI, as far as the driver asks it.
  cat >"$T/bin/onevm" <<EOF
#!/bin/sh
[ "\$1" = show ] && [ "\$2" = -x ] && [ -f "$T/vm-\$3.xml" ] && exec cat "$T/vm-\$3.xml"
echo "[one.vm.info] Error getting virtual machine [\$3]." >&2
exit 255
EOF
  cat >"$T/bin/onedatastore" <<EOF
#!/bin/sh
[ "\$1" = show ] && [ "\$2" = -x ] && [ -f "$T/ds-\$3.xml" ] && exec cat "$T/ds-\$3.xml"
echo "[one.datastore.info] Error getting datastore [\$3]." >&2
exit 255
EOF
  chmod +x "$T/bin/onevm" "$T/bin/onedatastore"
  for h in "${TM_HOSTS[@]}"; do
    "$T/bin/ssh" -o BatchMode=yes "$h" true || { cat "$T/hosts/$h/sshd.log" >&2; fail "ssh to $h"; }
    _tm_master "$h"
  done
}

# vm_xml ID [LCM_STATE]: a VM whose disk 0 is a raw image disk (ssh image datastore 1, as
# the system datastore's TM_MAD_SYSTEM makes it: TM_MAD_SYSTEM=ferry), disk 1 the context CD.
vm_xml() {
  local id=$1 lcm=${2:-3}
  cat >"$T/vm-$id.xml" <<EOF
<VM><ID>$id</ID><NAME>vm-$id</NAME><STATE>3</STATE><LCM_STATE>$lcm</LCM_STATE><DEPLOY_ID>one-$id</DEPLOY_ID>
<TEMPLATE>
<CONTEXT><DISK_ID><![CDATA[1]]></DISK_ID><TARGET><![CDATA[hda]]></TARGET></CONTEXT>
<DISK><CLONE><![CDATA[YES]]></CLONE><CLONE_TARGET><![CDATA[SYSTEM]]></CLONE_TARGET><DATASTORE><![CDATA[images]]></DATASTORE><DATASTORE_ID><![CDATA[1]]></DATASTORE_ID><DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX><DISK_ID><![CDATA[0]]></DISK_ID><DISK_TYPE><![CDATA[FILE]]></DISK_TYPE><DRIVER><![CDATA[raw]]></DRIVER><FORMAT><![CDATA[raw]]></FORMAT><IMAGE><![CDATA[guest]]></IMAGE><IMAGE_ID><![CDATA[7]]></IMAGE_ID><LN_TARGET><![CDATA[SYSTEM]]></LN_TARGET><SOURCE><![CDATA[/var/lib/one//datastores/1/0123456789abcdef]]></SOURCE><TARGET><![CDATA[vda]]></TARGET><TM_MAD><![CDATA[ssh]]></TM_MAD><TM_MAD_SYSTEM><![CDATA[ferry]]></TM_MAD_SYSTEM><TYPE><![CDATA[FILE]]></TYPE></DISK>
<TM_MAD_SYSTEM><![CDATA[ferry]]></TM_MAD_SYSTEM>
</TEMPLATE>
<HISTORY_RECORDS><HISTORY><SEQ>0</SEQ><HOSTNAME>hostA</HOSTNAME><DS_ID>0</DS_ID><TM_MAD><![CDATA[ferry]]></TM_MAD></HISTORY></HISTORY_RECORDS>
</VM>
EOF
}

# tm_make_vm ID SIZE_MIB DATA_MIB AT_MIB: VM ID's directory on hostA: disk.0 a sparse SIZE_MIB
# image with DATA_MIB random at its start and 1 MiB more at AT_MIB, disk.1 (64 KiB, the
# context CD), deployment.0; and the VM's XML (vm_xml).
tm_make_vm() {
  local id=$1 d=$T/hosts/hostA/ds/0/$1
  mkdir -p "$d"
  truncate -s "$2M" "$d/disk.0"
  head -c $(($3 << 20)) /dev/urandom | dd of="$d/disk.0" conv=notrunc status=none
  head -c $((1 << 20)) /dev/urandom | dd of="$d/disk.0" bs=1M seek="$4" conv=notrunc status=none
  head -c 65536 /dev/urandom >"$d/disk.1"
  echo "<domain>one-$id</domain>" >"$d/deployment.0"
  vm_xml "$id"
}

# tm ACTION ARGS...: one line of a transfer file, run as one_tm.rb runs it (on the front-end).
tm() {
  local action=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  TM_RC=0
  on_host fe env SSH="$T/bin/ssh-fe" PATH="$T/bin:$PATH" "$REMOTES/tm/ferry/$action" "$@" \
    >"$T/tm.out" 2>"$T/tm.err" || TM_RC=$?
  t1=$(date +%s.%N)
  TM_OUT=$(cat "$T/tm.out")
  TM_ERR=$(cat "$T/tm.err")
  TM_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

# tm_ok ACTION ARGS...: the action must succeed.
tm_ok() {
  tm "$@"
  [ "$TM_RC" = 0 ] || { echo "$TM_ERR" >&2; fail "ferry/$1 $2 $3 failed ($TM_RC)"; }
}

# tm_fails TEXT ACTION ARGS...: the action must fail and its message contain TEXT.
tm_fails() {
  local want=$1
  shift
  tm "$@"
  [ "$TM_RC" != 0 ] || fail "ferry/$1 succeeded, expected a failure: $want"
  grep -qF -- "$want" "$T/tm.err" || { echo "$TM_ERR" >&2; fail "ferry/$1: the message lacks: $want"; }
  echo "ok: ferry/$1 refused: $(grep ERROR "$T/tm.err" | tail -1)"
}

# host_ferry HOST ARGS...: the ferry command on HOST.
host_ferry() {
  local h=$1
  shift
  on_host "$h" "$FERRY" "$@"
}

# wait_gone HOST PATH [SECONDS]: until PATH no longer exists on HOST.
wait_gone() {
  local h=$1 p=$2 limit=${3:-120} i
  for ((i = 0; i < limit * 10; i++)); do
    on_host "$h" test -e "$p" || return 0
    sleep 0.1
  done
  fail "$h:$p still there after $limit s"
}

# wait_plain HOST PATH [SECONDS]: until PATH on HOST is a regular file (the clone converged).
wait_plain() {
  local h=$1 p=$2 limit=${3:-120} i
  for ((i = 0; i < limit * 10; i++)); do
    on_host "$h" test -f "$p" -a ! -L "$p" && return 0
    sleep 0.1
  done
  fail "$h:$p is not a plain file after $limit s"
}

# tm_assert_clean [SECONDS]: no process of the driver left (ferry-fuse, ferry-nbd, keepers,
# tunnels: anything but a guest's qemu naming the datastore), no ferry FUSE mount and no loop device over one in any host; waits a little for
# processes that are on their way out.
tm_assert_clean() {
  local limit=${1:-30} i left h
  for ((i = 0; i < limit * 10; i++)); do
    left=$(for p in $(pgrep -f -- "$DS/"); do
      [ "$p" = $$ ] || [ "$(cat /proc/$p/comm 2>/dev/null)" = qemu-system-x86 ] || echo "$p"
    done)
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || { ps -o pid,args -p $left >&2; fail "driver processes still running"; }
  # (A namespace starts as a copy of this one: other tests' mounts, not under $T, are in it.)
  for h in "${TM_HOSTS[@]}"; do
    if on_host "$h" awk -v t="$T/" '$9 == "fuse.ferry" && index($5, t) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
      on_host "$h" grep " fuse.ferry " /proc/self/mountinfo >&2
      fail "$h: a ferry FUSE mount is left"
    fi
  done
  if losetup -a | grep -qF "$T/"; then losetup -a >&2; fail "a loop device of this test is left"; fi
  left=$(find "$T/tun" -type s)
  [ -z "$left" ] || fail "a tunnel's socket is left on a destination host: $left"
  return 0
}

# tm_transfer LINE...: the lines of one transfer file, dispatched as one_tm.rb does: the first
# word lower-cased is the action, the second the driver; ACTION.SUFFIX falls back to ACTION when
# the driver has no such script; the lines run in order and the first failure stops them.
# Sets TM_RC, TM_ERR (all lines' stderr), TM_SECONDS (all lines).
tm_transfer() {
  local line t0 t1 words action driver script
  t0=$(date +%s.%N)
  : >"$T/tm.err"
  TM_RC=0
  for line in "$@"; do
    read -r -a words <<<"$line"
    action=${words[0],,} driver=${words[1]}
    script=$REMOTES/tm/$driver/$action
    [ -e "$script" ] || script=$REMOTES/tm/$driver/${action%%.*}
    [ -e "$script" ] || fail "no script for '$line'"
    on_host fe env SSH="$T/bin/ssh-fe" PATH="$T/bin:$PATH" "$script" "${words[@]:2}" \
      </dev/null >>"$T/tm.out" 2>>"$T/tm.err" || { TM_RC=$?; break; }
  done
  t1=$(date +%s.%N)
  TM_ERR=$(cat "$T/tm.err")
  TM_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

tm_transfer_ok() {
  tm_transfer "$@"
  [ "$TM_RC" = 0 ] || { echo "$TM_ERR" >&2; fail "transfer failed ($TM_RC): $*"; }
}

tm_transfer_fails() {
  local want=$1
  shift
  tm_transfer "$@"
  [ "$TM_RC" != 0 ] || fail "transfer succeeded, expected a failure: $want"
  grep -qF -- "$want" "$T/tm.err" || { echo "$TM_ERR" >&2; fail "the transfer's message lacks: $want"; }
  echo "ok: transfer refused: $(grep ERROR "$T/tm.err" | tail -1)"
}

# tm_sha FILE: sha256 of FILE's size and the bytes of its data extents (holes skipped, all-zero
# blocks of data skipped too, so a sparse copy and its source compare equal), for disks too big
# to hash whole.
tm_sha() {
  /usr/bin/python3 - "$1" <<'PY'
import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
end = os.fstat(fd).st_size
h = hashlib.sha256(b"size:%d" % end)
zero = bytes(1 << 20)
off = 0
while off < end:
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    pos = data - data % (1 << 20)
    while pos < hole:
        chunk = os.pread(fd, 1 << 20, pos)
        if chunk != zero[:len(chunk)]:
            h.update(b"%d:" % pos + chunk)
        pos += 1 << 20
    off = max(hole, pos)
print(h.hexdigest())
PY
}

# guest_on HOST NAME MODE [--append ARGS] -- QEMU_ARGS...: guest_start (lib-guest.sh) with
# qemu running in HOST's namespace, where it sees HOST's datastore at $DS.
guest_on() {
  local h=$1
  shift
  mkdir -p "$T/qemu-$h"
  cat >"$T/qemu-$h/qemu-system-x86_64" <<EOF2
#!/bin/sh
exec nsenter -t ${_tm_holder[$h]} -m -- /usr/bin/qemu-system-x86_64 "\$@"
EOF2
  chmod +x "$T/qemu-$h/qemu-system-x86_64"
  PATH=$T/qemu-$h:$PATH guest_start "$@"
}

# ferry_json HOST CTL FIELD: one field of `ferry status --json CTL` on HOST.
ferry_json() {
  host_ferry "$1" status --json "$2" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$3"
}
