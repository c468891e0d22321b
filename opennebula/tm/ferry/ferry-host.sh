#!/usr/bin/env bash
# The ferry transfer-manager driver's host side (docs/opennebula.md): what the actions on the
# front-end run on a host, sent there as a file over ssh (ferry-common.sh host_run).
#
#   ferry-host.sh list DIR                  one line per entry of a VM directory:
#                                           NAME TYPE SIZE ALLOCATED MTIME (TYPE file, dir,
#                                           link, clone = a symlink to a clone here, other)
#   ferry-host.sh free DIR                  bytes available on DIR's filesystem
#   ferry-host.sh inspect DIR probe|- [DST_HOST DST_DIR [NAME SOCK]...]
#                                           the source side of a move: .monitor, a probe file
#                                           (shared storage?), the entries (as list); exports
#   ferry-host.sh prepare DIR PROBE DS_DIR MONITOR NEED hold|-|none
#                         [NAME SIZE IDENTITY SRC_HOST SW SOCK DISK_NEED]...
#                                           the destination side: shared?, room, .monitor, the
#                                           clones' work directories and destination files;
#                                           then clone-start unless "none"
#   ferry-host.sh export-start [SW SRC DST_HOST DW SOCK]...
#                                           export SRC read-only (ferry-nbd on SW/nbd.sock, or
#                                           with FERRY_TRANSPORT=tls on a TCP port with TLS) and
#                                           start the keeper: the tunnel to DST_HOST and the wait
#   ferry-host.sh export-stop keep|remove SW...  stop exports (and remove the source disks)
#   ferry-host.sh clone-start [DW hold|-]...  the clone at DW's disk path (ferry-fuse --publish),
#                                           ready once its first block was read through it
#   ferry-host.sh clone-stop keep|remove|none DW...  stop clones; tell their exports what to do
#   ferry-host.sh clone-release DW          end the hold (live migration, postmigrate)
#   ferry-host.sh clone-restart DW          a clone whose processes are gone serves again
#   ferry-host.sh resume DS_DIR...          after a reboot: every export and clone there again
#   ferry-host.sh clones DIR                the clones (DIR/.ferry/disk.N) and exports of DIR
#   ferry-host.sh copy-rest SRC_DIR DST_HOST STAGING MUX NAME...
#                                           tar SRC_DIR without NAME... and .ferry to
#                                           DST_HOST:STAGING (over the ssh connection MUX)
#   ferry-host.sh install-rest DIR STAGING  the staged files into DIR
#   ferry-host.sh remove-rest DIR NAME...   remove DIR's entries but NAME... and .ferry
#   ferry-host.sh remove-names DIR NAME...  remove DIR/NAME... (and DIR when empty)
#   ferry-host.sh socket-remove SOCK...     remove the tunnels' ends SOCK... (sshd leaves a
#                                           remote forward's socket behind when it ends)
#   ferry-host.sh monitor-get|monitor-set DS_DIR [TEXT]   the datastore's .monitor
#   ferry-host.sh probe-make|probe-test|probe-remove PATH  is a directory shared storage?
#   ferry-host.sh keeper SW                 (the keeper itself; started by export-start)
#
# Work directories: the clone's DST_DIR/.ferry/disk.N/ (disk = the destination file until
# convergence, map, ctl, pid, log, mnt/, src.sock -> the tunnel's end (a socket in $TMPDIR)
# or with tls src.uri (the export's nbds:// URI), source = where the export is); the export's
# SRC_DIR/.ferry/export.N/ (nbd.sock or port and uri, nbd.pid, keeper.pid,
# keeper.log, ctl.sock = the clone's control socket through the tunnel, mux.sock = the
# tunnel's ssh connection, conf).  A clone's directory goes when its server exits after
# convergence (run-clone); one left by a crash is kept for the next move (its map resumes).
#
# Settings come from the environment (ferry-common.sh passes ferryrc's): FERRY_BIN_DIR,
# FERRY_HOST_SSH (host to host), FERRY_RATE, FERRY_FRONTEND (fuse|loop), FERRY_KEEP_SOURCE,
# FERRY_ALLOW_OTHER, FERRY_TUNNEL_TIMEOUT, FERRY_TRANSPORT (ssh|tls), FERRY_TLS_DIR,
# FERRY_TLS_PORTS, FERRY_TLS_LISTEN, FERRY_TLS_ADDRESS; FERRY_HOST_NAME is the host's name in
# OpenNebula.
set -uo pipefail
export LANG=C LC_ALL=C

BIN=${FERRY_BIN_DIR:+$FERRY_BIN_DIR/}
HOST_SSH=${FERRY_HOST_SSH:-ssh}
HOSTNAME_=${FERRY_HOST_NAME:-$(hostname 2>/dev/null || echo host)}

die() {
  echo "$HOSTNAME_: $*" >&2
  exit 1
}

# Is process PID running (a zombie is not: an init that does not reap would keep it)?
running() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
alive() { [ -s "$1" ] && running "$(cat "$1" 2>/dev/null)"; }

# stop_pidfile FILE [SECONDS]: SIGTERM the process, wait for it to go (then SIGKILL).
stop_pidfile() {
  local f=$1 limit=${2:-60} pid i
  [ -s "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < limit * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  echo "$HOSTNAME_: pid $pid ($f) did not stop within $limit s: killing it and its group" >&2
  local pgid
  pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
  [ -n "$pgid" ] && [ "$pgid" != "$(ps -o pgid= -p $$ | tr -d ' ')" ] && kill -KILL -- "-$pgid" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
  return 0
}

# on_host HOST COMMAND...: run COMMAND on another host, with this host's settings (over the
# ssh connection MUX when it is set and up).
on_host() {
  local host=$1 q="" a
  shift
  for a in "$@"; do q+=" $(printf %q "$a")"; done
  local mux=()
  [ -n "${MUX:-}" ] && [ -S "$MUX" ] && mux=(-o ControlMaster=no -o "ControlPath=$MUX")
  # shellcheck disable=SC2086
  $HOST_SSH -o BatchMode=yes "${mux[@]}" "$host" "FERRY_HOST_NAME=$(printf %q "$host")" \
    "FERRY_BIN_DIR=$(printf %q "${FERRY_BIN_DIR:-}")" "FERRY_HOST_SSH=$(printf %q "$HOST_SSH")" \
    "FERRY_KEEP_SOURCE=$(printf %q "${FERRY_KEEP_SOURCE:-no}")$q"
}

# start_logged PIDFILE LOG COMMAND...: a ferry server in the background (COMMAND runs it in the
# foreground and writes PIDFILE once ready), in a session of its own, its messages in LOG (not
# syslog: the work directory tells what happened); done once PIDFILE is written, or failed when
# COMMAND exits first.
start_logged() {
  local pidfile=$1 log=$2 i pid
  shift 2
  rm -f "$pidfile"
  setsid "$@" </dev/null >>"$log" 2>&1 &
  pid=$!
  for ((i = 0; i < 600; i++)); do
    [ -s "$pidfile" ] && return 0
    running "$pid" || return 1
    sleep 0.05
  done
  echo "$HOSTNAME_: $1 did not get ready within 30 s" >>"$log"
  kill "$pid" 2>/dev/null
  return 1
}

# run-clone DW FERRY_FUSE ARGS...: the clone's server, and when it ends having converged (the
# destination renamed over the disk, the map committed) its work directory goes.
cmd_run_clone() {
  local dw=$1 path
  shift
  path=$(vm_dir_of "$dw")/$(disk_of "$dw")
  "$@"
  local rc=$?
  echo "$(date '+%F %T') ferry-fuse exited ($rc)"
  tidy_clone "$dw"
  return $rc
}

# A clone that is done (not running; its destination renamed over the disk, which may be gone
# since, as the source of a later move) leaves nothing.
tidy_clone() {
  local dw=$1
  alive "$dw/pid" && return 1
  [ -e "$dw/identity" ] && [ ! -e "$dw/disk" ] || return 1
  [ -L "$dw/src.sock" ] && rm -f "$(readlink "$dw/src.sock")"
  rm -rf "$dw"
  rmdir "$(dirname "$dw")" 2>/dev/null
  # A source directory whose last disk went before this clone exited (a chain: its export
  # closed the file only then) goes now; a destination's holds the disk.
  rmdir "$(vm_dir_of "$dw")" 2>/dev/null
  return 0
}

tidy_dir() {
  local w
  for w in "$1"/.ferry/disk.*; do [ -d "$w" ] && tidy_clone "$w"; done
  return 0
}

# "disk.N" of a work directory ".../.ferry/disk.N" or ".../.ferry/export.N"
disk_of() {
  local b
  b=$(basename "$1")
  echo "disk.${b#*.}"
}

vm_dir_of() { dirname "$(dirname "$1")"; }

# Is PATH a symlink into a clone of this host (a disk still hydrating here)?  Prints the clone's
# work directory.
clone_behind() {
  local path=$1 target dw
  [ -L "$path" ] || return 1
  dw=$(dirname "$path")/.ferry/$(basename "$path")
  target=$(readlink "$path")
  case $target in "$dw"/* | /dev/loop*) ;; *) return 1 ;; esac
  [ -d "$dw" ] || return 1
  echo "$dw"
}

cmd_list() {
  local dir=$1 e
  [ -d "$dir" ] || die "$dir: no such directory"
  tidy_dir "$dir"
  for e in "$dir"/* "$dir"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    local name type size blocks
    name=$(basename "$e")
    if [ -L "$e" ]; then
      type=link
      clone_behind "$e" >/dev/null && type=clone
    elif [ -f "$e" ]; then type=file
    elif [ -d "$e" ]; then type=dir
    else type=other
    fi
    size=$(stat -L -c %s "$e" 2>/dev/null || echo 0)
    if [ $type = clone ]; then
      # What the clone's own source holds (the FUSE file claims to be all there).
      blocks=$(cat "$(clone_behind "$e")/need" 2>/dev/null || echo "$size")
    else
      blocks=$(stat -L -c '%b %B' "$e" 2>/dev/null | awk '{ print $1 * $2 }')
    fi
    echo "$name $type $size ${blocks:-0} $(stat -L -c %Y "$e" 2>/dev/null || echo 0)"
  done
}

# Bytes free where DIR is (or will be: its nearest existing parent).
cmd_free() {
  local d=$1
  while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
  df -B1 --output=avail "$d" | tail -1 | tr -d ' '
}

# ---- the export (source host) ------------------------------------------------------------

# export-start [SW SRC DST_HOST DW SOCK]...
cmd_export_start() {
  while [ $# -ge 5 ]; do
    export_start_one "$1" "$2" "$3" "$4" "$5"
    shift 5
  done
}

export_start_one() {
  local sw=$1 src=$2 dst_host=$3 dw=$4 sock=$5
  [ -r "$src" ] || die "$src: cannot read the disk to move"
  mkdir -p "$sw" || die "$sw: cannot create"
  [ "$0" -ef "$sw/ferry-host.sh" ] || cp "$0" "$sw/ferry-host.sh" || die "$sw: cannot install the host script"
  {
    printf 'SRC=%q\nDST_HOST=%q\nDW=%q\nSOCK=%q\n' "$src" "$dst_host" "$dw" "$sock"
    printf 'FERRY_BIN_DIR=%q\nFERRY_HOST_SSH=%q\nFERRY_KEEP_SOURCE=%q\n' "${FERRY_BIN_DIR:-}" \
      "$HOST_SSH" "${FERRY_KEEP_SOURCE:-no}"
    printf 'FERRY_TRANSPORT=%q\nFERRY_TLS_DIR=%q\nFERRY_TLS_PORTS=%q\nFERRY_TLS_LISTEN=%q\nFERRY_TLS_ADDRESS=%q\n' \
      "${FERRY_TRANSPORT:-ssh}" "${FERRY_TLS_DIR:-}" "${FERRY_TLS_PORTS:-10810-10899}" \
      "${FERRY_TLS_LISTEN:-}" "${FERRY_TLS_ADDRESS:-}"
  } >"$sw/conf"
  if [ "${FERRY_TRANSPORT:-ssh}" = tls ]; then
    alive "$sw/nbd.pid" || export_start_tls "$sw" "$src"
  elif ! alive "$sw/nbd.pid"; then
    rm -f "$sw/nbd.sock"
    start_logged "$sw/nbd.pid" "$sw/nbd.log" "${BIN}ferry-nbd" --foreground \
      --pidfile "$sw/nbd.pid" --read-only --socket "$sw/nbd.sock" "$src" || die "ferry-nbd cannot export $src: $(tail -3 "$sw/nbd.log")"
  fi
  if ! alive "$sw/keeper.pid"; then
    setsid bash "$sw/ferry-host.sh" keeper "$sw" </dev/null >>"$sw/keeper.log" 2>&1 &
  fi
  return 0
}

# With tls: ferry-nbd requiring TLS with client certificates of the cloud's CA, on the first
# free port of FERRY_TLS_PORTS (the one it had before, when it is started again after a
# reboot: the clone's URI names it); SW/port and SW/uri say where.
export_start_tls() {
  local sw=$1 src=$2 first last port at said="" ports
  [ -r "$FERRY_TLS_DIR/server-cert.pem" ] && [ -r "$FERRY_TLS_DIR/server-key.pem" ] &&
    [ -r "$FERRY_TLS_DIR/ca-cert.pem" ] ||
    die "$FERRY_TLS_DIR: FERRY_TRANSPORT=tls needs ca-cert.pem, server-cert.pem and server-key.pem there"
  IFS=- read -r first last <<<"${FERRY_TLS_PORTS:-10810-10899}"
  if [ -s "$sw/port" ]; then ports=$(cat "$sw/port"); else ports=$(seq "$first" "$last"); fi
  for port in $ports; do
    at=$(stat -c %s "$sw/nbd.log" 2>/dev/null || echo 0)
    if start_logged "$sw/nbd.pid" "$sw/nbd.log" "${BIN}ferry-nbd" --foreground \
      --pidfile "$sw/nbd.pid" --read-only --tls require --tls-certificates "$FERRY_TLS_DIR" \
      --listen "${FERRY_TLS_LISTEN:-0.0.0.0}:$port" "$src"; then
      echo "$port" >"$sw/port"
      echo "nbds://${FERRY_TLS_ADDRESS:-$HOSTNAME_}:$port/?tls-certificates=$FERRY_TLS_DIR" >"$sw/uri"
      return 0
    fi
    said=$(tail -c +$((at + 1)) "$sw/nbd.log")
    [[ $said == *"in use"* ]] || die "ferry-nbd cannot export $src with TLS: $(grep -m3 . <<<"$said")"
  done
  die "ferry-nbd cannot export $src with TLS: no free port in ${FERRY_TLS_PORTS:-10810-10899}"
}

# The keeper: one ssh connection to the clone's host carrying the NBD export there (-R) and
# the clone's control socket back here (-L); `ferry wait` through it; at convergence the
# export stops and the source disk goes.  A lost connection is made again.
cmd_keeper() {
  local sw=$1
  # shellcheck disable=SC1091
  . "$sw/conf"
  echo $$ >"$sw/keeper.pid"
  local sshpid="" waitpid="" stop=0 backoff=1 rc silent seen=0
  trap 'stop=1; [ -n "$waitpid" ] && kill $waitpid 2>/dev/null; [ -n "$sshpid" ] && kill $sshpid 2>/dev/null' TERM INT
  echo "$(date '+%F %T') keeper $$: $SRC -> $DST_HOST:$DW"
  while [ $stop = 0 ]; do
    rm -f "$sw/ctl.sock" "$sw/mux.sock" # an earlier keeper's, if it was killed
    # With tls the data has its own TCP connection: ssh carries only the control socket.
    local forward=(-R "$SOCK:$sw/nbd.sock")
    [ "${FERRY_TRANSPORT:-ssh}" = tls ] && forward=()
    # shellcheck disable=SC2086
    $FERRY_HOST_SSH -N -o ControlMaster=yes -o "ControlPath=$sw/mux.sock" -o BatchMode=yes \
      -o ExitOnForwardFailure=yes -o ServerAliveInterval=10 \
      -o ServerAliveCountMax=3 -o StreamLocalBindUnlink=yes \
      "${forward[@]}" -L "$sw/ctl.sock:$DW/ctl" "$DST_HOST" &
    sshpid=$!
    silent=0
    # While the connection lives: wait for convergence through it.  A clone that does not
    # answer (starting, its server restarting) or that failed (it may be resumed) is asked
    # again; one gone for a minute with its work directory is given up, the source kept.
    while [ $stop = 0 ] && running "$sshpid"; do
      if ! "${BIN}ferry" status "$sw/ctl.sock" >/dev/null 2>&1; then
        # Silent for 2 s: ask the destination host what became of the clone.
        silent=$((silent + 1))
        if [ $silent -ge 10 ]; then
          silent=0
          case $(clone_state) in
          converged)
            echo "$(date '+%F %T') converged on $DST_HOST (the clone has exited)"
            kill "$sshpid" 2>/dev/null
            wait "$sshpid" 2>/dev/null
            source_done "$sw"
            exit 0
            ;;
          stopped)
            # It ran and its processes are gone (the host rebooted, they were killed): serve
            # it again on its map.
            if [ $seen = 1 ]; then
              echo "$(date '+%F %T') the clone on $DST_HOST stopped: restarting it"
              MUX=$sw/mux.sock on_host "$DST_HOST" bash "$DW/ferry-host.sh" clone-restart "$DW" ||
                echo "$(date '+%F %T') the restart failed"
            fi
            ;;
          gone)
            echo "$(date '+%F %T') the clone $DST_HOST:$DW is gone: export stopped, source kept"
            [ "${FERRY_TRANSPORT:-ssh}" = tls ] ||
              MUX=$sw/mux.sock on_host "$DST_HOST" rm -f "$SOCK" 2>/dev/null
            kill "$sshpid" 2>/dev/null
            stop_pidfile "$sw/nbd.pid"
            rm -rf "$sw"
            rmdir "$(vm_dir_of "$sw")/.ferry" 2>/dev/null
            exit 0
            ;;
          esac
        fi
        sleep 0.2
        continue
      fi
      silent=0
      seen=1
      backoff=1
      "${BIN}ferry" wait "$sw/ctl.sock" &
      waitpid=$!
      wait "$waitpid"
      rc=$?
      waitpid=""
      if [ $rc = 0 ] && [ $stop = 0 ]; then
        echo "$(date '+%F %T') converged on $DST_HOST"
        kill "$sshpid" 2>/dev/null
        wait "$sshpid" 2>/dev/null
        source_done "$sw"
        exit 0
      fi
      sleep 1
    done
    kill "$sshpid" 2>/dev/null
    wait "$sshpid" 2>/dev/null
    sshpid=""
    [ $stop = 0 ] || break
    echo "$(date '+%F %T') the connection to $DST_HOST was lost: again in $backoff s"
    sleep "$backoff"
    backoff=$((backoff < 30 ? backoff * 2 : 30))
    # sshd does not replace an old socket of a remote forward: remove it first.
    [ "${FERRY_TRANSPORT:-ssh}" = tls ] || on_host "$DST_HOST" rm -f "$SOCK" 2>/dev/null
  done
  echo "$(date '+%F %T') keeper $$: stopped"
}

# In the keeper: the state of its clone, asked on the destination host (over the keeper's own
# connection): running, converged (the destination renamed over the disk: the clone is done,
# it may have exited and tidied up), stopped (not running, not done), gone (stopped and
# removed, the disk's path with it), unknown.
clone_state() {
  local path
  path=$(vm_dir_of "$DW")/$(disk_of "$DW")
  MUX=$sw/mux.sock on_host "$DST_HOST" sh -c "p=\$(cat '$DW/pid' 2>/dev/null);
    if [ -n \"\$p\" ] && [ -r /proc/\$p/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/\$p/status; then echo running;
    elif [ -f '$path' ] && [ ! -L '$path' ] && [ ! -e '$DW/disk' ]; then echo converged;
    elif [ -d '$DW' ]; then echo stopped;
    else echo gone; fi" 2>/dev/null || echo unknown
}

# The clone converged: the export stops, the source disk goes (or is kept as MIGRATED-...).
source_done() {
  local sw=$1
  stop_pidfile "$sw/nbd.pid"
  remove_source "$sw"
}

remove_source() {
  local sw=$1 src dir dw
  # shellcheck disable=SC1091
  src=$(. "$sw/conf" && echo "$SRC")
  dir=$(dirname "$src")
  # A source that is itself a clone here (moved on before it converged): it is not needed.
  if dw=$(clone_behind "$src"); then
    echo "$(date '+%F %T') $src was still a clone: stopping it"
    clone_stop_one "$dw" remove
  fi
  if [ "${FERRY_KEEP_SOURCE:-no}" = yes ]; then
    mv -f "$src" "$dir/MIGRATED-$(basename "$src")" 2>/dev/null
  else
    rm -f "$src"
  fi
  rm -rf "$sw"
  tidy_dir "$dir"
  rmdir "$dir/.ferry" 2>/dev/null
  rmdir "$dir" 2>/dev/null
  return 0
}

# export-stop keep|remove SW...
cmd_export_stop() {
  local what=$1 sw
  shift
  for sw in "$@"; do export_stop_one "$sw" "$what"; done
}

export_stop_one() {
  local sw=$1 what=$2
  [ -d "$sw" ] || return 0
  stop_pidfile "$sw/keeper.pid" 10
  stop_pidfile "$sw/nbd.pid"
  if [ "$what" = remove ]; then
    remove_source "$sw"
  else
    local dir
    dir=$(vm_dir_of "$sw")
    rm -rf "$sw"
    rmdir "$dir/.ferry" 2>/dev/null
  fi
  return 0
}

# ---- the clone (destination host) --------------------------------------------------------

# prepare DIR PROBE DS_DIR MONITOR NEED hold|-|none [NAME SIZE IDENTITY SOURCE_HOST SW SOCK
# DISK_NEED]...: the
# destination side before anything starts.  Prints "shared" when PROBE (made in the source
# directory) is visible here: nothing to copy.  Else checks the room (NEED bytes), keeps the
# datastore's .monitor as the source host has it, and makes each clone's work directory with
# its destination file (sparse; kept when a clone of the same source left it: the map resumes);
# prints "serving NAME" for a clone already running, then "separate"; then, unless "none",
# starts the clones (clone-start, held with "hold").
cmd_prepare() {
  local dir=$1 probe=$2 dsdir=$3 monitor=$4 need=$5 hold=$6 start=()
  shift 6
  if [ -n "$probe" ] && [ -e "$probe" ]; then
    echo shared
    return 0
  fi
  local avail
  avail=$(cmd_free "$dir")
  if [[ $avail =~ ^[0-9]+$ ]] && [ "$avail" -lt "$need" ]; then
    die "$dsdir: not enough space: the VM's disks and files hold $need bytes, $avail are free here"
  fi
  cmd_monitor_set "$dsdir" "$monitor"
  mkdir -p "$dir" || die "$dir: cannot create"
  tidy_dir "$dir"
  while [ $# -ge 7 ]; do
    local name=$1 size=$2 identity=$3 shost=$4 ssw=$5 sock=$6 dneed=$7 dw=$dir/.ferry/$1
    shift 7
    if alive "$dw/pid"; then
      echo "serving $name"
      continue
    fi
    start+=("$dw" "$hold")
    if [ -e "$dw/identity" ] && [ "$(cat "$dw/identity")" != "$identity" ]; then
      # A map of another source (or of this one before it changed): worthless, start afresh.
      rm -rf "$dw"
    fi
    mkdir -p "$dw/mnt" || die "$dw: cannot create"
    echo "$shost $ssw" >"$dw/source"
    # A destination already renamed over the disk (converged before a crash) is kept as is.
    if [ ! -e "$dw/disk" ] && { [ -L "$dir/$name" ] || [ ! -e "$dir/$name" ] || [ ! -e "$dw/identity" ]; }; then
      truncate -s "$size" "$dw/disk" || die "$dw/disk: cannot create"
    fi
    echo "$identity" >"$dw/identity"
    echo "$dneed" >"$dw/need"
    # With tls the export's URI; with ssh the tunnel's end: a socket where the export's keeper
    # can bind it before this directory exists (its ssh connection is made while this runs).
    rm -f "$dw/src.uri" "$dw/src.sock"
    case $sock in
    nbds://*) echo "$sock" >"$dw/src.uri" ;;
    *) ln -sfn "$sock" "$dw/src.sock" ;;
    esac
  done
  echo separate
  [ "$hold" = none ] || [ ${#start[@]} = 0 ] || cmd_clone_start "${start[@]}"
}

# clone-start [DW hold|-]...: each clone at its disk path (ferry-fuse --publish), once the
# export arrived through the tunnel; done when the first block was read through the path.
cmd_clone_start() {
  while [ $# -ge 2 ]; do
    clone_start_one "$1" "$2"
    shift 2
  done
}

clone_start_one() {
  local dw=$1 hold=$2 path i lock
  path=$(vm_dir_of "$dw")/$(disk_of "$dw")
  # One start at a time (the front-end's and a keeper's restart may meet).
  exec {lock}>"$dw/lock"
  flock "$lock"
  if ! alive "$dw/pid"; then
    # Held until released (postmigrate): a restart after a crash is held again until then.
    if [ "$hold" = hold ]; then : >"$dw/hold"; else rm -f "$dw/hold"; fi
    # The settings of this host's ferry, for a restart by a keeper or after a reboot.
    printf 'FERRY_BIN_DIR=%q\nFERRY_RATE=%q\nFERRY_FRONTEND=%q\nFERRY_ALLOW_OTHER=%q\nFERRY_TUNNEL_TIMEOUT=%q\n' \
      "${FERRY_BIN_DIR:-}" "${FERRY_RATE:-}" "${FERRY_FRONTEND:-fuse}" "${FERRY_ALLOW_OTHER:-no}" \
      "${FERRY_TUNNEL_TIMEOUT:-20}" >"$dw/settings"
    local source="nbd+unix:///?socket=$dw/src.sock"
    [ -s "$dw/src.uri" ] && source=$(cat "$dw/src.uri")
    local args=(--supervise --publish "$path" --control "$dw/ctl"
      --source "$source" --source-identity "$(cat "$dw/identity")" --map "$dw/map")
    [ "$hold" = hold ] && args+=(--hold)
    [ -n "${FERRY_RATE:-}" ] && args+=(--rate "$FERRY_RATE")
    [ "${FERRY_FRONTEND:-fuse}" = loop ] && args+=(--loop)
    [ "${FERRY_ALLOW_OTHER:-no}" = yes ] && args+=(--allow-other)
    [ "$0" -ef "$dw/ferry-host.sh" ] || cp "$0" "$dw/ferry-host.sh" || die "$dw: cannot install the host script"
    # Until the export arrives through the tunnel: the socket there and answering (a socket
    # left by an earlier tunnel refuses connections until the keeper's new one is bound).
    local deadline=$((SECONDS + ${FERRY_TUNNEL_TIMEOUT:-20})) ok=0 at said
    while [ $SECONDS -le $deadline ]; do
      if [ -S "$dw/src.sock" ] || [ -s "$dw/src.uri" ]; then
        at=$(stat -c %s "$dw/log" 2>/dev/null || echo 0)
        if start_logged "$dw/pid" "$dw/log" bash "$dw/ferry-host.sh" run-clone "$dw" \
          "${BIN}ferry-fuse" --foreground --pidfile "$dw/pid" "${args[@]}" "$dw/disk" "$dw/mnt"; then
          ok=1
          break
        fi
        said=$(tail -c +$((at + 1)) "$dw/log")
        [[ $said == *"cannot connect"* || $said == *"server disconnected"* ]] ||
          die "ferry-fuse cannot serve the clone at $path: $(grep -m3 . <<<"$said")"
      fi
      sleep 0.2
    done
    if [ $ok = 0 ]; then
      [ -S "$dw/src.sock" ] || [ -s "$dw/src.uri" ] ||
        die "$dw/src.sock: the export did not reach this host within ${FERRY_TUNNEL_TIMEOUT:-20} s"
      die "ferry-fuse cannot serve the clone at $path: $(tail -3 "$dw/log")"
    fi
  fi
  flock -u "$lock"
  # What a booting VM does first: the first block, through the disk's path.
  dd if="$path" of=/dev/null bs=4096 count=1 status=none ||
    die "$path: the first block cannot be read through the clone"
}

# inspect DIR probe|- [DST_HOST DST_DIR [NAME SOCK]...]: the source side of a move:
# "monitor TEXT" (the datastore's .monitor), with "probe" "probe PATH" (a file made in DIR, to
# tell shared storage), "entry NAME TYPE SIZE ALLOCATED MTIME" lines; then each NAME that is a
# file (or a clone here) is exported to DST_HOST at once ("exported NAME"): its tunnel gets up
# while the destination prepares.
cmd_inspect() {
  local dir=$1 probe=$2
  shift 2
  [ -d "$dir" ] || die "$dir: no such directory"
  echo "monitor $(cmd_monitor_get "$(dirname "$dir")")"
  [ "$probe" = probe ] && echo "probe $(mktemp -p "$dir" .ferry-probe.XXXXXX 2>/dev/null)"
  local listing
  listing=$(cmd_list "$dir") || exit 1
  sed 's/^/entry /' <<<"$listing"
  [ $# -ge 2 ] || return 0
  local dhost=$1 ddir=$2 name sock
  shift 2
  while [ $# -ge 2 ]; do
    name=$1 sock=$2
    shift 2
    grep -qE "^$name (file|clone) " <<<"$listing" || continue
    export_start_one "$dir/.ferry/export.${name#disk.}" "$dir/$name" "$dhost" "$ddir/.ferry/$name" "$sock"
    if [ "${FERRY_TRANSPORT:-ssh}" = tls ]; then
      echo "exported $name $(cat "$dir/.ferry/export.${name#disk.}/uri")"
    else
      echo "exported $name"
    fi
  done
}

# clone-stop keep|remove|none DW...
cmd_clone_stop() {
  local upstream=$1 dw
  shift
  for dw in "$@"; do clone_stop_one "$dw" "$upstream"; done
}

clone_stop_one() {
  local dw=$1 upstream=$2 path
  [ -d "$dw" ] || return 0
  path=$(vm_dir_of "$dw")/$(disk_of "$dw")
  stop_pidfile "$dw/pid"
  [ -L "$dw/src.sock" ] && rm -f "$(readlink "$dw/src.sock")"
  if [ -L "$path" ]; then
    case $(readlink "$path") in "$dw"/* | /dev/loop*) rm -f "$path" ;; esac
  fi
  if [ "$upstream" != none ] && [ -s "$dw/source" ]; then
    local shost ssw
    read -r shost ssw <"$dw/source"
    on_host "$shost" bash "$ssw/ferry-host.sh" export-stop "$upstream" "$ssw" ||
      echo "$HOSTNAME_: could not stop the export $shost:$ssw ($upstream the source there by hand)" >&2
  fi
  rm -rf "$dw"
  rmdir "$(dirname "$dw")" 2>/dev/null
  return 0
}

cmd_clone_release() {
  local dw=$1
  "${BIN}ferry" release "$dw/ctl" >/dev/null || die "$dw/ctl: ferry release failed"
  rm -f "$dw/hold"
}

# clone-restart DW: a clone whose server is gone (the host rebooted, every process of it was
# killed) serves again on its map, held if it was.  Nothing when it runs or is done.
cmd_clone_restart() {
  local dw=$1 path
  path=$(vm_dir_of "$dw")/$(disk_of "$dw")
  alive "$dw/pid" && return 0
  tidy_clone "$dw" && return 0
  [ -e "$dw/disk" ] || [ -f "$path" ] || die "$dw: no destination file to resume"
  # A mount left by the dead server (no reboot): gone, so that the mountpoint is free.
  umount -l "$dw/mnt" 2>/dev/null || fusermount3 -u -z "$dw/mnt" 2>/dev/null
  echo "$(date '+%F %T') restarting the clone on its map" >>"$dw/log"
  (
    # shellcheck disable=SC1091
    [ -f "$dw/settings" ] && . "$dw/settings"
    BIN=${FERRY_BIN_DIR:+$FERRY_BIN_DIR/}
    clone_start_one "$dw" "$([ -e "$dw/hold" ] && echo hold || echo -)"
  )
}

# resume DS_DIR...: after a reboot, every export and clone of these datastore directories that
# is not done starts again where its map says (see docs/opennebula.md).
cmd_resume() {
  local ds w
  for ds in "$@"; do
    for w in "$ds"/*/.ferry/export.*; do
      [ -f "$w/conf" ] || continue
      alive "$w/keeper.pid" && alive "$w/nbd.pid" && continue
      (
        # shellcheck disable=SC1091
        . "$w/conf"
        export FERRY_BIN_DIR FERRY_HOST_SSH FERRY_KEEP_SOURCE FERRY_TRANSPORT FERRY_TLS_DIR \
          FERRY_TLS_PORTS FERRY_TLS_LISTEN FERRY_TLS_ADDRESS
        BIN=${FERRY_BIN_DIR:+$FERRY_BIN_DIR/} HOST_SSH=${FERRY_HOST_SSH:-ssh}
        export_start_one "$w" "$SRC" "$DST_HOST" "$DW" "$SOCK"
      ) && echo "export $w: started again"
    done
    for w in "$ds"/*/.ferry/disk.*; do
      [ -d "$w" ] || continue
      alive "$w/pid" && continue
      tidy_clone "$w" && continue
      cmd_clone_restart "$w" && echo "clone $w: started again"
    done
  done
  return 0
}

cmd_clones() {
  local dir=$1 w
  for w in "$dir"/.ferry/disk.* "$dir"/.ferry/export.*; do
    [ -d "$w" ] && echo "$w"
  done
  return 0
}

# copy-rest SRC_DIR DST_HOST STAGING MUX NAME...: SRC_DIR but NAME..., ferry's files and the
# probe, into DST_HOST:STAGING (made afresh) over the ssh connection MUX — a keeper's: it is
# waited for a moment, as the keeper connects while the destination prepares; without it, a
# connection of its own.
cmd_copy_rest() {
  local src=$1 dst_host=$2 staging=$3 mux=$4 i
  shift 4
  local ex=(--exclude=./.ferry "--exclude=./.ferry-probe.*") n
  for n in "$@"; do ex+=("--exclude=./$n"); done
  for ((i = 0; i < 50; i++)); do [ -S "$mux" ] && break; sleep 0.1; done
  # shellcheck disable=SC2086
  tar -C "$src" --sparse "${ex[@]}" -cf - . |
    $HOST_SSH -o BatchMode=yes -o ControlMaster=no -o "ControlPath=$mux" "$dst_host" \
      "rm -rf '$staging' && mkdir -p '$staging' && tar -C '$staging' --sparse -xf -" ||
    die "copying $src to $dst_host:$staging failed"
}

# install-rest DIR STAGING: the staged files into DIR (replacing what is there), STAGING gone.
cmd_install_rest() {
  local dir=$1 staging=$2 e
  [ -d "$staging" ] || die "$staging: nothing was staged"
  mkdir -p "$dir" || die "$dir: cannot create"
  for e in "$staging"/* "$staging"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    rm -rf "${dir:?}/$(basename "$e")"
    mv "$e" "$dir/" || die "$e: cannot move into $dir"
  done
  rmdir "$staging"
  rmdir "$(dirname "$staging")" 2>/dev/null
  return 0
}

cmd_remove_names() {
  local dir=$1 n
  shift
  for n in "$@"; do [ -n "$n" ] && rm -rf "${dir:?}/$n"; done
  rmdir "$dir" 2>/dev/null
  return 0
}

# Only sockets of this driver's tunnels (FERRY_TUNNEL_DIR/ferry-tm.*.sock), nothing else by
# mistake.
cmd_socket_remove() {
  local s
  for s in "$@"; do
    case ${s##*/} in ferry-tm.*.sock) [ -S "$s" ] && rm -f "$s" ;; esac
  done
  return 0
}

cmd_remove_rest() {
  local dir=$1 e keep n
  shift
  for e in "$dir"/* "$dir"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=$(basename "$e")
    [ "$n" = .ferry ] && continue
    keep=0
    for k in "$@"; do [ "$n" = "$k" ] && keep=1; done
    [ $keep = 1 ] || rm -rf "$e"
  done
  rmdir "$dir" 2>/dev/null
  return 0
}

# The datastore's .monitor (local monitoring, as the ssh driver keeps it).
cmd_monitor_get() { cat "$1/.monitor" 2>/dev/null || true; }
cmd_monitor_set() {
  mkdir -p "$1" || die "$1: cannot create"
  [ -z "$2" ] || [ "$(cat "$1/.monitor" 2>/dev/null)" = "$2" ] || echo "$2" >"$1/.monitor"
}

# Is PATH on this host the same file as on the host that made PROBE (shared storage)?
cmd_probe_make() { mktemp -p "$1" .ferry-probe.XXXXXX; }
cmd_probe_test() { [ -e "$1" ] && echo shared || echo separate; }
cmd_probe_remove() { rm -f "$1"; }

cmd=${1:-}
shift || true
case $cmd in
list) cmd_list "$@" ;;
free) cmd_free "$@" ;;
export-start) cmd_export_start "$@" ;;
export-stop) cmd_export_stop "$@" ;;
keeper) cmd_keeper "$@" ;;
clone-start) cmd_clone_start "$@" ;;
run-clone) cmd_run_clone "$@" ;;
prepare) cmd_prepare "$@" ;;
inspect) cmd_inspect "$@" ;;
clone-stop) cmd_clone_stop "$@" ;;
clone-release) cmd_clone_release "$@" ;;
clone-restart) cmd_clone_restart "$@" ;;
resume) cmd_resume "$@" ;;
clones) cmd_clones "$@" ;;
copy-rest) cmd_copy_rest "$@" ;;
remove-rest) cmd_remove_rest "$@" ;;
remove-names) cmd_remove_names "$@" ;;
socket-remove) cmd_socket_remove "$@" ;;
install-rest) cmd_install_rest "$@" ;;
monitor-get) cmd_monitor_get "$@" ;;
monitor-set) cmd_monitor_set "$@" ;;
probe-make) cmd_probe_make "$@" ;;
keeper-log) tail -5 "$1/keeper.log" 2>/dev/null ;;
probe-test) cmd_probe_test "$@" ;;
probe-remove) cmd_probe_remove "$@" ;;
*) die "ferry-host.sh: unknown command '$cmd'" ;;
esac
