#!/usr/bin/env bash
# docs/ARCHITECTURE.md's module map matches the tree: every source file (.c .h .py .sh, and
# any executable under opennebula/) of the code folders is named in its folder's rows, and
# every file a row names exists, unless the row's folder is marked "(planned)".  Adding a
# file means adding it to the map.
. "$TESTS_DIR/functions.sh"
DOC=$SRCDIR/docs/ARCHITECTURE.md
FOLDERS=(common backends frontend nbd-server fuse-mount migrator hypervisor opennebula)

# The map's rows as "named DIR/FILE" or "planned DIR/FILE" lines (a row with an empty folder
# cell continues the folder above it).
awk -F'|' '
  /^## / { on = ($0 == "## Module map"); next }
  !on || !/^\|/ || $2 ~ /^ *(directory|-+) *$/ { next }
  {
    d = $2; gsub(/^ +| +$/, "", d)
    if (d != "") { planned = (d ~ /\(planned\)/); sub(/ .*/, "", d); dir = d }
    n = split($3, f, /[ ,`]+/)
    for (i = 1; i <= n; i++) if (f[i] != "") print (planned ? "planned " : "named ") dir f[i]
  }' "$DOC" >"$T/map"
[ "$(grep -c '^named ' "$T/map")" -gt 50 ] || { cat "$T/map"; fail "no module map found in $DOC"; }

bad=0
# Named but missing.
while read -r kind path; do
  [ "$kind" = named ] || continue
  [ -e "$SRCDIR/$path" ] || { echo "named in the module map but missing: $path"; bad=1; }
done <"$T/map"
# Present but not named.
cd "$SRCDIR"
for dir in "${FOLDERS[@]}"; do
  [ -d "$dir" ] || continue
  find "$dir" -type f \( -name '*.c' -o -name '*.h' -o -name '*.py' -o -name '*.sh' \) -print
  [ "$dir" != opennebula ] || find "$dir" -type f -perm -u+x -print
done | sort -u >"$T/files"
while read -r path; do
  grep -qxF -e "named $path" -e "planned $path" "$T/map" ||
    { echo "not in docs/ARCHITECTURE.md's module map: $path"; bad=1; }
done <"$T/files"
[ $bad = 0 ] || fail "docs/ARCHITECTURE.md's module map and the tree differ (see above)"
echo "module map ok: $(wc -l <"$T/files") files, all named"
