#!/usr/bin/env bash
# The ferry transfer-manager driver: what its actions share on the front-end.  Sourced by
# each action ("$(dirname "$0")/ferry-common.sh"); see docs/opennebula.md.
#
# oned runs an action as oneadmin on the front-end, with the arguments of one line of its
# transfer file (src/tm/TransferManager.cc) and, for pre/post/failmigrate, the VM's XML in
# base64 on stdin (src/vmm_mad/exec/one_vmm_exec.rb); exit 0 is success, stderr goes to the
# VM's log (src/tm_mad/one_tm.rb).  Hosts are reached with $SSH (as scripts_common.sh has it:
# SSH=${SSH:-ssh}); what runs there is ferry-host.sh, sent with each command.
set -uo pipefail
export LANG=C LC_ALL=C

DRIVER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TM_DIR=$(dirname "$DRIVER_DIR")
ACTION=$(basename "$0")
# shellcheck source=ferryrc
. "${FERRY_TM_CONF:-$DRIVER_DIR/ferryrc}"
SSH=${SSH:-ssh}
BASE_TM=${BASE_TM:-ssh}

log() { echo "INFO: ferry/$ACTION: $*" >&2; }
# The message oned shows: one line naming the problem.
fail() {
  echo "ERROR: ferry/$ACTION: $*" >&2
  exit 1
}

# HOST:PATH -> HOST, PATH (slashes squeezed, no trailing slash).
arg_host() { echo "${1%%:*}"; }
arg_path() {
  local p=${1#*:}
  while [[ $p == *//* ]]; do p=${p//\/\//\/}; done
  [ "$p" = / ] || p=${p%/}
  echo "$p"
}
is_disk() { [[ $1 =~ /disk\.[0-9]+$ ]]; }

# The base driver's script for this action (or another).
base_script() { echo "$TM_DIR/$BASE_TM/${1:-$ACTION}"; }
# Hand the action to the base driver, unchanged.
delegate() {
  local s
  s=$(base_script)
  [ -x "$s" ] || fail "the base driver $BASE_TM has no $ACTION ($s)"
  exec "$s" "$@"
}

# Actions that change a disk file in place (resize, snapshots) wait until ferry is done with it.
refuse_while_cloning() {
  local host path dir works
  host=$(arg_host "$1") path=$(arg_path "$1")
  is_disk "$path" || return 0
  dir=$(dirname "$path")
  works=$(host_run "$host" clones "$dir" 2>/dev/null) || return 0
  if grep -qx "$dir/.ferry/$(basename "$path")" <<<"$works"; then
    fail "$host:$path: ferry is still moving this disk (ferry status $dir/.ferry/$(basename "$path")/ctl on $host); retry once it converged"
  fi
}

case ${FERRY_TRANSPORT:-ssh} in
ssh) ;;
tls)
  [ -n "${FERRY_TLS_DIR:-}" ] || fail "FERRY_TRANSPORT=tls needs FERRY_TLS_DIR (the hosts' certificate directory) in ferryrc"
  [[ ${FERRY_TLS_PORTS:-10810-10899} =~ ^[0-9]+-[0-9]+$ ]] ||
    fail "FERRY_TLS_PORTS=$FERRY_TLS_PORTS: expected FIRST-LAST (e.g. 10810-10899)"
  ;;
*) fail "FERRY_TRANSPORT=$FERRY_TRANSPORT: expected ssh or tls" ;;
esac

# host_run HOST COMMAND ARGS...: ferry-host.sh COMMAND ARGS... on HOST (stdout is its output).
host_run() {
  local host=$1 q="" a
  shift
  for a in "$@"; do q+=" $(printf %q "$a")"; done
  local env="FERRY_HOST_NAME=$(printf %q "$host") FERRY_BIN_DIR=$(printf %q "${FERRY_BIN_DIR:-}")"
  env+=" FERRY_HOST_SSH=$(printf %q "${FERRY_HOST_SSH:-ssh}")"
  env+=" FERRY_RATE=$(printf %q "${FERRY_RATE:-}") FERRY_FRONTEND=$(printf %q "${FERRY_FRONTEND:-fuse}")"
  env+=" FERRY_KEEP_SOURCE=$(printf %q "${FERRY_KEEP_SOURCE:-no}")"
  env+=" FERRY_ALLOW_OTHER=$(printf %q "${FERRY_ALLOW_OTHER:-no}")"
  env+=" FERRY_TUNNEL_TIMEOUT=$(printf %q "${FERRY_TUNNEL_TIMEOUT:-20}")"
  env+=" FERRY_TRANSPORT=$(printf %q "${FERRY_TRANSPORT:-ssh}") FERRY_TLS_DIR=$(printf %q "${FERRY_TLS_DIR:-}")"
  env+=" FERRY_TLS_PORTS=$(printf %q "${FERRY_TLS_PORTS:-10810-10899}")"
  env+=" FERRY_TLS_LISTEN=$(printf %q "${FERRY_TLS_LISTEN:-}") FERRY_TLS_ADDRESS=$(printf %q "${FERRY_TLS_ADDRESS:-}")"
  local t0 rc=0
  [ -z "${FERRY_TM_TIMING:-}" ] || t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  $SSH "$host" "d=\$(mktemp -d /tmp/ferry-tm.XXXXXX) && cat >\"\$d/ferry-host.sh\" && $env bash \"\$d/ferry-host.sh\"$q; rc=\$?; rm -rf \"\$d\"; exit \$rc" \
    <"$DRIVER_DIR/ferry-host.sh" || rc=$?
  [ -z "${FERRY_TM_TIMING:-}" ] ||
    echo "$host $1: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }') s" >>"$FERRY_TM_TIMING"
  return $rc
}

# The VM's XML: from oned (onevm show -x), or as pre/postmigrate got it on stdin.
VM_XML=
vm_xml_from_oned() {
  VM_XML=$(onevm show -x "$1" 2>&1) || fail "onevm show -x $1: $VM_XML"
}
vm_xml_from_base64() { VM_XML=$(echo "$1" | base64 -d 2>/dev/null) || fail "the VM's XML on stdin is not base64"; }
xpath() { printf '%s' "$VM_XML" | xmllint --xpath "string($1)" - 2>/dev/null; }

# The disks of the VM's template that ferry clones, as "disk.N" names: not the context CD, not a
# CD-ROM or a block/network disk, and raw (a qcow2 file grows as the guest allocates; a clone
# has a fixed size).
xml_disks() {
  local n i ctx id type driver format
  n=$(printf '%s' "$VM_XML" | xmllint --xpath 'count(/VM/TEMPLATE/DISK)' - 2>/dev/null || echo 0)
  ctx=$(xpath /VM/TEMPLATE/CONTEXT/DISK_ID)
  for ((i = 1; i <= n; i++)); do
    local d=/VM/TEMPLATE/DISK[$i]
    read -r id type driver format <<<"$(xpath "concat('i',$d/DISK_ID,' t',$d/TYPE,' d',$d/DRIVER,' f',$d/FORMAT)")"
    id=${id#i} type=${type#t} driver=${driver#d} format=${format#f}
    [ -n "$id" ] && [ "$id" != "$ctx" ] || continue
    case ${type^^} in CDROM | BLOCK | RBD | RBD_CDROM | ISCSI | GLUSTER | SHEEPDOG | *_CDROM) continue ;; esac
    [ -n "$driver" ] || driver=$format
    [ -z "$driver" ] || [ "${driver,,}" = raw ] || continue
    echo "disk.$id"
  done
  return 0
}

# copy_dir SRC_HOST SRC_DIR DST_HOST DST_DIR [TAR_EXCLUDE...]: SRC_DIR's files (sparse) into
# DST_DIR, but ferry's own, through the front-end's connections to both hosts.
copy_dir() {
  local shost=$1 sdir=$2 dhost=$3 ddir=$4
  shift 4
  $SSH "$shost" "tar -C $(printf %q "$sdir") --sparse --exclude=./.ferry '--exclude=./.ferry-probe.*' $(printf '%q ' "$@") -cf - ." |
    $SSH "$dhost" "mkdir -p $(printf %q "$ddir") && tar -C $(printf %q "$ddir") --sparse -xf -"
}

# ferry_move SRC_HOST SRC_DIR DST_HOST DST_DIR hold|- copy|copykeep|- [NAME...]: the VM's disks
# (NAME..., by default those of xml_disks that are files in SRC_DIR) as clones at DST_DIR on
# DST_HOST (held back with "hold"), and with "copy" the rest of SRC_DIR copied there and
# removed from SRC_DIR once the clones serve ("copykeep": left there, the source VM still
# runs).  Sets MOVED (the disks cloned).  Returns 1, doing nothing, when there is no disk to
# clone; 2, doing nothing, when DST_HOST sees SRC_DIR itself (shared storage); 0 once every
# clone served its first block through its path.  On failure whatever started is stopped, the
# source is as it was, and the action fails with the reason.
#
# Three rounds: the source lists the directory and starts the exports (their ssh tunnels come
# up meanwhile); then at once the destination checks shared storage and room, makes the work
# directories and starts the clones, and the source copies the rest into a staging directory
# there over a tunnel's connection; then at once the staged files take their places and the
# source drops them.
ferry_move() {
  local shost=$1 sdir=$2 dhost=$3 ddir=$4 hold=$5 copy=$6
  shift 6
  local wanted=("$@") name n out t0 args=()
  t0=$(date +%s.%N)
  [ ${#wanted[@]} -gt 0 ] || mapfile -t wanted < <(xml_disks)
  declare -A SOCK
  for name in "${wanted[@]}"; do
    SOCK[$name]=${FERRY_TUNNEL_DIR:-/tmp}/ferry-tm.$VMID.$name.$RANDOM$RANDOM.sock
    args+=("$name" "${SOCK[$name]}")
  done
  if ! out=$(host_run "$shost" inspect "$sdir" probe "$dhost" "$ddir" "${args[@]}" 2>&1); then
    local all=()
    for name in "${wanted[@]}"; do all+=("$sdir/.ferry/export.${name#disk.}"); done
    [ ${#all[@]} = 0 ] || host_run "$shost" export-stop keep "${all[@]}" >/dev/null 2>&1
    host_run "$dhost" socket-remove "${SOCK[@]}" >/dev/null 2>&1
    fail "$shost:$sdir: $(reason "$out" "$shost") (nothing was moved)"
  fi
  local monitor probe listing need=0 type size alloc mtime
  monitor=$(sed -n 's/^monitor //p' <<<"$out")
  probe=$(sed -n 's/^probe //p' <<<"$out")
  listing=$(sed -n 's/^entry //p' <<<"$out" | grep -v '^\.ferry-probe\.')
  # "exported NAME WHERE": where the destination host finds the export (the tunnel's socket
  # with ssh, an nbds:// URI with tls).
  declare -A WHERE
  MOVED=()
  while read -r name where; do
    [ -n "$name" ] || continue
    MOVED+=("$name")
    WHERE[$name]=${where:-${SOCK[$name]}}
  done < <(sed -n 's/^exported //p' <<<"$out")
  declare -A SIZE MTIME ALLOC
  while read -r name type size alloc mtime; do
    [ -n "$name" ] && [ "$name" != .ferry ] || continue
    need=$((need + alloc))
    SIZE[$name]=$size MTIME[$name]=$mtime ALLOC[$name]=$alloc
  done <<<"$listing"
  local sws=() dws=()
  for name in "${MOVED[@]}"; do
    sws+=("$sdir/.ferry/export.${name#disk.}")
    dws+=("$ddir/.ferry/$name")
  done
  if [ ${#MOVED[@]} = 0 ]; then
    host_run "$shost" probe-remove "$probe" >/dev/null 2>&1
    return 1
  fi
  args=()
  for name in "${MOVED[@]}"; do
    args+=("$name" "${SIZE[$name]}" "$shost:$sdir/$name:${SIZE[$name]}:${MTIME[$name]}"
      "$shost" "$sdir/.ferry/export.${name#disk.}" "${WHERE[$name]}" "${ALLOC[$name]}")
  done
  # Round 2, both hosts at once: the destination prepares and starts the clones while the
  # source copies the rest into a staging directory there (over the first tunnel's connection
  # once it is up).
  local tmp copied=() ex=() staging=$ddir/.ferry/incoming
  tmp=$(mktemp -d)
  host_run "$dhost" prepare "$ddir" "$probe" "$(dirname "$ddir")" "$monitor" "$need" "$hold" \
    "${args[@]}" >"$tmp/prepare" 2>&1 &
  local prepare_pid=$! copy_pid=""
  if [ "$copy" != - ]; then
    while read -r name type size alloc mtime; do
      [ -n "$name" ] && [ "$name" != .ferry ] || continue
      if [[ " ${MOVED[*]} " == *" $name "* ]]; then ex+=("$name"); else copied+=("$name"); fi
    done <<<"$listing"
    if [ ${#copied[@]} -gt 0 ]; then
      host_run "$shost" copy-rest "$sdir" "$dhost" "$staging" "${sws[0]}/mux.sock" "${ex[@]}" \
        >"$tmp/copy" 2>&1 &
      copy_pid=$!
    fi
  fi
  local why="" prc=0 crc=0
  wait "$prepare_pid" || prc=$?
  [ -z "$copy_pid" ] || wait "$copy_pid" || crc=$?
  out=$(cat "$tmp/prepare")
  if [ $prc != 0 ]; then
    why="$dhost:$ddir: $(reason "$out" "$dhost")"
    if [[ $out == *"did not reach this host"* ]]; then
      why+=" (the tunnel from $shost: $(host_run "$shost" keeper-log "${sws[0]}" 2>/dev/null | tail -2 | tr '\n' ' '))"
    fi
  elif grep -qx shared <<<"$out"; then
    host_run "$shost" export-stop keep "${sws[@]}" >/dev/null 2>&1
    host_run "$dhost" socket-remove "${SOCK[@]}" >/dev/null 2>&1
    host_run "$shost" probe-remove "$probe" >/dev/null 2>&1
    [ -z "$copy_pid" ] || host_run "$dhost" remove-names "$ddir/.ferry" incoming >/dev/null 2>&1
    rm -rf "$tmp"
    return 2
  elif [ $crc != 0 ]; then
    why="copying $shost:$sdir to $dhost:$ddir failed: $(reason "$(cat "$tmp/copy")" "$shost")"
  fi
  rm -rf "$tmp"
  if [ -n "$why" ]; then
    host_run "$dhost" clone-stop none "${dws[@]}" >/dev/null 2>&1 || log "could not stop the clones on $dhost"
    host_run "$shost" export-stop keep "${sws[@]}" >/dev/null 2>&1 || log "could not stop the exports on $shost"
    # The tunnels' ends, which their sshd leaves on the destination host.
    host_run "$dhost" socket-remove "${SOCK[@]}" >/dev/null 2>&1
    [ -z "$copy_pid" ] || host_run "$dhost" remove-names "$ddir/.ferry" incoming >/dev/null 2>&1
    host_run "$dhost" remove-names "$ddir" >/dev/null 2>&1 # the directory, if left empty
    host_run "$shost" probe-remove "$probe" >/dev/null 2>&1
    fail "$why (the VM's disks on $shost are as they were)"
  fi
  # Round 3, both hosts at once: the staged files take their places; for a move the source
  # drops them (it keeps only the exported disks, each until its clone converged).
  if [ -n "$copy_pid" ]; then
    host_run "$dhost" install-rest "$ddir" "$staging" >"$tmp.install" 2>&1 &
    local install_pid=$! irc=0
    if [ "$copy" = copy ]; then
      out=$(host_run "$shost" remove-rest "$sdir" "${MOVED[@]}" 2>&1) ||
        log "could not remove the moved files from $shost:$sdir: $out"
    else
      host_run "$shost" probe-remove "$probe" >/dev/null 2>&1
    fi
    wait "$install_pid" || irc=$?
    out=$(cat "$tmp.install")
    rm -f "$tmp.install"
    [ $irc = 0 ] || fail "$dhost:$ddir: the VM's files could not be put in place: $(reason "$out" "$dhost")"
  elif [ "$copy" = copy ]; then
    host_run "$shost" remove-rest "$sdir" "${MOVED[@]}" >/dev/null 2>&1
  else
    host_run "$shost" probe-remove "$probe" >/dev/null 2>&1
  fi
  for name in "${MOVED[@]}"; do
    log "$dhost:$ddir/$name is a clone of $shost:$sdir/$name (${SIZE[$name]} bytes)${hold/#-/}"
  done
  log "${#MOVED[@]} disk(s) served on $dhost in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s; they hydrate in the background"
  return 0
}

# migration_source_dir DIR VMID DSID: the VM directory on the source host of a live migration.
# oned gives pre/post/failmigrate the new system directory only (TransferManager.cc
# migrate_transfer_command: get_system_dir()), but a live migration may change the system
# datastore (DS_LIVE_MIGRATION=yes of the KVM driver, RequestManagerVirtualMachine.cc): the
# previous history record (onevm show -x has them all) names the datastore it leaves; every
# host has its datastores at the same place.
migration_source_dir() {
  local dir=$1 vmid=$2 dsid=$3 xml prev
  xml=$(onevm show -x "$vmid" 2>/dev/null) || { echo "$dir"; return 0; }
  prev=$(printf '%s' "$xml" | xmllint --xpath 'string(/VM/HISTORY_RECORDS/HISTORY[last()-1]/DS_ID)' - 2>/dev/null)
  if [ -n "$prev" ] && [ "$prev" != "$dsid" ] && [ "$(basename "$dir")" = "$vmid" ]; then
    echo "$(dirname "$(dirname "$dir")")/$prev/$vmid"
  else
    echo "$dir"
  fi
}

# migrate_other ACTION ARGS...: the same pre/post/failmigrate of every other driver among the
# VM's disks (as tm_common.sh's migrate_other does for the system datastore's driver), with
# "ferry" as the 6th argument so that they do not call back.  postmigrate skips the drivers
# whose postmigrate removes the VM directory on the source host (ssh, ceph): ferry still
# exports disks from there until they converged.
migrate_other() {
  local action=$1 tm seen=" ferry " i n
  shift
  n=$(printf '%s' "$VM_XML" | xmllint --xpath 'count(/VM/TEMPLATE/DISK)' - 2>/dev/null || echo 0)
  for ((i = 1; i <= n; i++)); do
    tm=$(xpath "/VM/TEMPLATE/DISK[$i]/TM_MAD")
    [ -n "$tm" ] && [[ $seen != *" $tm "* ]] || continue
    seen+="$tm "
    if [ "$action" = postmigrate ] && { [ "$tm" = ssh ] || [ "$tm" = ceph ]; }; then
      log "not calling $tm/$action: it removes the VM directory on the source host, where ferry still exports disks"
      continue
    fi
    [ -x "$TM_DIR/$tm/$action" ] || continue
    log "calling $tm/$action"
    echo "$TEMPLATE_64" | "$TM_DIR/$tm/$action" "$@" ferry || return 1
  done
  return 0
}

# The reason in a failed host_run's output, naming the host when ssh could not reach it.
reason() {
  local out=$1 host=$2
  out=$(echo "$out" | grep -v '^$' | tail -3 | tr '\n' ' ')
  case $out in
  *"Connection refused"* | *"No route to host"* | *"Could not resolve"* | *"timed out"* | *"Permission denied"*)
    echo "host $host is unreachable by ssh: $out" ;;
  *) echo "$out" ;;
  esac
}
