#!/usr/bin/env bash
# The man pages: each docs/*.pod, with the shared flags spliced in from frontend/options.c
# (frontend-pod, as docs/meson.build does), is valid POD, and every flag ferry-nbd,
# ferry-fuse and `ferry hydrate` print under "Clone:" in --help has an =item in all three
# pages.
. "$TESTS_DIR/functions.sh"
requires podchecker
POD=$BUILD_DIR/frontend/frontend-pod
[ -x "$POD" ] || fail "$POD not built"

for page in ferry ferry-nbd ferry-fuse; do
  "$POD" "$SRCDIR/docs/$page.pod" "$T/$page.pod"
  ! grep -n '^=for ferry-options' "$T/$page.pod" || fail "$page.pod: a marker was not replaced"
  podchecker -warnings "$T/$page.pod" 2>"$T/check" || { cat "$T/check"; fail "$page.pod: podchecker"; }
  ! grep -q WARNING "$T/check" || { cat "$T/check"; fail "$page.pod: podchecker warnings"; }
done
# An unknown group is an error, not a silent gap.
printf '=pod\n\n=over 4\n\n=for ferry-options nosuch\n\n=back\n' >"$T/bad.pod"
! "$POD" "$T/bad.pod" "$T/bad.out" 2>"$T/err" || fail "unknown group accepted"
grep -qF "unknown option group 'nosuch'" "$T/err" || fail "message: $(cat "$T/err")"

flags=$("$FERRY_NBD" --help | awk '$0 == "Clone:" { on = 1; next } /^[A-Z].*:$/ { on = 0 } on' |
  grep -oE -- '--[a-z-]+' | sort -u)
[ -n "$flags" ] || fail "no clone flags in ferry-nbd --help"
for page in ferry ferry-nbd ferry-fuse; do
  for f in $flags; do
    grep -qE "^=item .*B<$f>" "$T/$page.pod" || fail "$page(1) lacks $f"
  done
done
echo "man pages ok: $(echo $flags)"
