#!/usr/bin/env bash
# The ferry CLI itself: help, version, unknown commands.
. "$TESTS_DIR/functions.sh"

"$FERRY" --help | grep -q '^  copy ' || fail "help lacks copy"
"$FERRY" --version | grep -q '^ferry [0-9]' || fail "no version"
rc=0; "$FERRY" frobnicate 2>"$T/err" || rc=$?
[ $rc -eq 2 ] || fail "unknown command exit $rc, want 2"
grep -qF "unknown command 'frobnicate'" "$T/err" || fail "message"
rc=0; "$FERRY" 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "no command exit $rc"
echo "cli ok"
