#!/usr/bin/env bash
# The shared flags (frontend/options.c) are one set in ferry-nbd, ferry-fuse and `ferry
# hydrate`: the same --help lines word for word, the same refusals of bad values, the short
# letters everywhere, and `ferry hydrate --pidfile` (new with the shared table).
. "$TESTS_DIR/functions.sh"
[ -x "$FERRY_FUSE" ] || skip "ferry-fuse not built (no fuse3)"

"$FERRY_NBD" --help >"$T/nbd.help"
"$FERRY_FUSE" --help >"$T/fuse.help"
"$FERRY" hydrate --help >"$T/hydrate.help"

# block NAME FILE: the lines of the "NAME:" section of a --help text.
block() { awk -v h="$1:" '$0 == h { on = 1; next } /^[A-Z][A-Za-z ]*:$/ || /^$/ { on = 0 } on' "$2"; }
block Clone "$T/nbd.help" >"$T/nbd.clone"
[ "$(wc -l <"$T/nbd.clone")" -ge 9 ] || { cat "$T/nbd.help"; fail "ferry-nbd --help: no Clone: section"; }
for p in fuse hydrate; do
  block Clone "$T/$p.help" >"$T/$p.clone"
  diff -u "$T/nbd.clone" "$T/$p.clone" || fail "Clone: lines of ferry-nbd and $p --help differ"
done
for flag in source map region-size workers request-size rate commit-interval paused source-identity; do
  grep -qE -- "^  (-., |    )--$flag( |$)" "$T/nbd.clone" || fail "Clone: lacks --$flag"
done
# The process flags: same line wherever a program takes the flag.
for flag in control pidfile verbose help version; do
  want=$(grep -E -- "^  (-., |    )--$flag( |$)" "$T/nbd.help") || fail "ferry-nbd --help lacks --$flag"
  for p in fuse hydrate; do
    [ "$(grep -E -- "^  (-., |    )--$flag( |$)" "$T/$p.help")" = "$want" ] || fail "$p --help: --$flag differs"
  done
done
fg='^  -f, --foreground '
[ "$(grep -- "$fg" "$T/nbd.help")" = "$(grep -- "$fg" "$T/fuse.help")" ] || fail "--foreground lines differ"
echo "ok: --help lines identical"

# Bad values: exit 2 and the same message from all three.
truncate -s 1M "$T/src" "$T/dst"
mkdir "$T/mnt"
same_refusal() { # same_refusal TEXT FLAGS...
  local want=$1 rc p; shift
  for p in nbd fuse hydrate; do
    rc=0
    case $p in
    nbd) "$FERRY_NBD" --source "$T/src" --map "$T/map" "$@" "$T/dst" 2>"$T/err" || rc=$? ;;
    fuse) "$FERRY_FUSE" --source "$T/src" --map "$T/map" "$@" "$T/dst" "$T/mnt" 2>"$T/err" || rc=$? ;;
    hydrate) "$FERRY" hydrate --source "$T/src" --map "$T/map" "$@" "$T/dst" 2>"$T/err" || rc=$? ;;
    esac
    [ $rc = 2 ] || { cat "$T/err"; fail "$p $*: exit $rc, want 2"; }
    grep -qF -- "$want" "$T/err" || { cat "$T/err"; fail "$p $*: stderr lacks '$want'"; }
  done
  [ ! -e "$T/map" ] || fail "a refused command created the map"
  echo "ok: $*: $want"
}
same_refusal "--workers: 0 is out of range (1..256)" --workers 0
same_refusal "--workers: 0 is out of range (1..256)" -w 0
same_refusal "--region-size: 3000 is not a power of two from 4K to 64M" --region-size 3000
same_refusal "--rate: '0' must be more than 0 bytes/s" --rate 0
same_refusal "--request-size: '1000' must be a multiple of 4K between 4K and 256M" -S 1000
same_refusal "--commit-interval: 'x' must be seconds from 0.01 to 3600" --commit-interval x
# Clone flags without a clone: refused by the two servers with the same words.
for p in "$FERRY_NBD" "$FERRY_FUSE"; do
  rc=0; "$p" --paused "$T/dst" "$T/mnt" 2>"$T/err" || rc=$?
  [ $rc = 2 ] || fail "$p --paused without --source: exit $rc"
  grep -qF -- "--paused without --source: --region-size, --workers and --rate apply to a clone" "$T/err" ||
    { cat "$T/err"; fail "$p: --paused without --source"; }
done
echo "ok: clone flags need a clone"

# The short letters work in ferry hydrate (as before) and its new --pidfile: written once the
# clone is open, removed at exit.
head -c 2M /dev/urandom >"$T/src2"
"$FERRY" hydrate -s "$T/src2" -m "$T/map2" -w 2 -S 64K --paused --control "$T/ctl" \
  --pidfile "$T/pid" "$T/dst2" &
hpid=$!
track_pid $hpid
[ "$(wait_for_pidfile "$T/pid")" = "$hpid" ] || fail "pidfile does not hold ferry hydrate's PID"
"$FERRY" resume "$T/ctl" >/dev/null
wait $hpid || fail "ferry hydrate exit status"
same_bytes "$T/src2" "$T/dst2"
[ ! -e "$T/pid" ] || fail "ferry hydrate left its pidfile"
echo "shared options ok"
