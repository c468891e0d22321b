#!/usr/bin/env bash
# ferry copy refuses bad usage (exit 2, message naming the flag) and bad volumes (exit 1,
# message naming the volume), and leaves the destination untouched.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"

"$FERRY" copy --help | grep -qF 'Usage: ferry copy [OPTIONS] SRC DST' || fail "--help"
"$FERRY" copy -h | grep -qF -- '--request-size' || fail "-h"

head -c 2097152 /dev/urandom >"$T/src.img"
head -c 1048576 /dev/urandom >"$T/dst.img"
before=$(sha "$T/dst.img")
C=("$FERRY" copy)
S=("$T/src.img" "$T/new.img")

expect_rc 2 "unknown option '--frobnicate'" "${C[@]}" --frobnicate "${S[@]}"
expect_rc 2 "unknown option '-x'" "${C[@]}" -x "${S[@]}"
expect_rc 2 "option '--requests' needs a value" "${C[@]}" "${S[@]}" --requests
expect_rc 2 "--requests: 'many' is not a number" "${C[@]}" --requests many "${S[@]}"
expect_rc 2 "--requests: 0 is out of range (1..1024)" "${C[@]}" --requests 0 "${S[@]}"
expect_rc 2 "--requests: 5000 is out of range (1..1024)" "${C[@]}" --requests 5000 "${S[@]}"
expect_rc 2 "--connections: 'two' is not a number" "${C[@]}" --connections two "${S[@]}"
expect_rc 2 "--connections: 0 is out of range (1..64)" "${C[@]}" --connections 0 "${S[@]}"
expect_rc 2 "--request-size: 'big' is not a size" "${C[@]}" --request-size big "${S[@]}"
expect_rc 2 "--request-size: '4Q' has an unknown unit" "${C[@]}" --request-size 4Q "${S[@]}"
expect_rc 2 "--request-size: '1000' must be a multiple of 4K between 4K and 256M" \
  "${C[@]}" --request-size 1000 "${S[@]}"
expect_rc 2 "--request-size: '1G' must be a multiple of 4K" "${C[@]}" --request-size 1G "${S[@]}"
expect_rc 2 "--rate: 'fast' is not a size" "${C[@]}" --rate fast "${S[@]}"
expect_rc 2 "--rate: '0' must be more than 0 bytes/s" "${C[@]}" --rate 0 "${S[@]}"
expect_rc 2 "--rate: 'x/s' is not a rate" "${C[@]}" --rate x/s "${S[@]}"
expect_rc 2 "missing SRC and DST" "${C[@]}"
expect_rc 2 "missing DST (after SRC '$T/src.img')" "${C[@]}" "$T/src.img"
expect_rc 2 "too many arguments: 'extra'" "${C[@]}" "${S[@]}" extra
[ ! -e "$T/new.img" ] || fail "a refused command created new.img"

# Too small a destination: refused before anything is written.
expect_rc 1 "$T/dst.img: destination is 1048576 bytes, smaller than the source (2097152 bytes)" \
  "${C[@]}" "$T/src.img" "$T/dst.img"
[ "$(sha "$T/dst.img")" = "$before" ] || fail "too-small destination was modified"

# Missing source: named, nothing created.
expect_rc 1 "$T/nosuch.img: No such file or directory" "${C[@]}" "$T/nosuch.img" "$T/new.img"
[ ! -e "$T/new.img" ] || fail "missing source created new.img"
# A directory is not a volume.
expect_rc 1 "$T: not a regular file or block device" "${C[@]}" "$T" "$T/new.img"
[ ! -e "$T/new.img" ] || fail "directory source created new.img"
# A destination in a missing directory.
expect_rc 1 "$T/no/dir/out.img: No such file or directory" "${C[@]}" "$T/src.img" "$T/no/dir/out.img"
# Unknown URI scheme.
expect_rc 1 "ftp://x/y: unsupported URI scheme 'ftp'" "${C[@]}" ftp://x/y "$T/new.img"
# An http destination is read-only.
[ ! -e "$T/new.img" ] || fail "refused copies created new.img"

# The successful path with every flag.
"$FERRY" copy --progress --connections 2 --requests 4 --request-size 64K --sparse \
  --rate 1G/s --flush --json "${S[@]}" >"$T/json" 2>"$T/stderr"
same_bytes "$T/src.img" "$T/new.img"
[ ! -s "$T/stderr" ] || fail "--progress drew on a non-terminal: $(cat "$T/stderr")"
"$FERRY" copy --no-flush -p -C 1 -R 2 -S 8K "$T/src.img" "$T/new2.img"
same_bytes "$T/src.img" "$T/new2.img"
echo "usage ok"
