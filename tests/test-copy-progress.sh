#!/usr/bin/env bash
# ferry copy --progress draws a bar on a terminal (and completes at 100%), --rate limits the
# read rate.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"
requires script

head -c $((8 << 20)) /dev/urandom >"$T/src.img"

# 8 MiB at 16 MiB/s (a quarter second of burst allowed): at least ~0.25 s.
start=$(date +%s.%N)
script -qec "'$FERRY' copy --progress --rate 16M/s --request-size 1M '$T/src.img' '$T/out.img'" \
  "$T/typescript" >/dev/null
end=$(date +%s.%N)
same_bytes "$T/src.img" "$T/out.img"
awk -v a="$start" -v b="$end" 'BEGIN { exit !(b - a >= 0.25) }' ||
  fail "--rate 16M/s copied 8 MiB in $(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }') s"
grep -aq 'copy \[#' "$T/typescript" || fail "no progress bar on a terminal: $(cat -v "$T/typescript")"
grep -aq '100% 8.0 MiB/8.0 MiB' "$T/typescript" || fail "bar did not end at 100%: $(cat -v "$T/typescript")"

# Without --progress nothing is drawn, even on a terminal.
script -qec "'$FERRY' copy '$T/src.img' '$T/out2.img'" "$T/typescript2" >/dev/null
! grep -aq 'copy \[' "$T/typescript2" || fail "bar drawn without --progress"
same_bytes "$T/src.img" "$T/out2.img"
echo "progress ok"
