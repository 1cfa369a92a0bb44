#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# libr3map when things go wrong: bad arguments and exports get an
# error that says why; a server that dies or stops answering makes
# the pages it should have served raise SIGBUS (never read as zeros,
# never hang); pages already fetched still read; writes that cannot be
# sent keep the region mapped until the program discards them.

. "$srcdir/functions.sh"
requires_root

SLICETEST="$abs_top_builddir/tests/r3map-slicetest"

if [ -n "$R3MAP_VALGRIND" ]; then
    skip_all "valgrind does not implement userfaultfd(2) (ENOSYS), which" \
        "libr3map is built on; test-slice.sh checks that it says so"
fi

truncate -s 8M "$tmp/disk"
start_server remote file "$tmp/disk"
uri=$(cat "$tmp/remote.uri")
start_server ro -r file "$tmp/disk"
start_server empty null 0

# One TAP line per line of r3map-slicetest's checks.
each_check ()
{
    local line
    "$@" > "$tmp/checks" 2> "$tmp/checks.err"
    while IFS= read -r line; do
        case $line in
            "# "*) echo "$line" ;;
            ok\ *) ok "${line#ok }" true ;;
            *) ok "${line#FAIL }" false; sed 's/^/# /' "$tmp/checks.err" ;;
        esac
    done < "$tmp/checks"
}

each_check $SLICETEST errors "$uri" "$(cat "$tmp/ro.uri")" "$(cat "$tmp/empty.uri")"

LIBR3MAP_TIMEOUT=soon $SLICETEST touch "$uri" 0 2> "$tmp/err"
ok "LIBR3MAP_TIMEOUT=soon is refused, naming it" \
    grep -q "LIBR3MAP_TIMEOUT=soon: must be a whole number" "$tmp/err"

# --- a server that dies --------------------------------------------------
start_server victim file "$tmp/disk"
vuri=$(cat "$tmp/victim.uri")
t0=$(date +%s)
$SLICETEST touch --kill="$(cat "$tmp/victim.pid")" --after=1 \
    "$vuri" 0 $((4 * 1048576)) > "$tmp/out" 2> "$tmp/err"
sed 's/^/# /' "$tmp/out" "$tmp/err"
ok "server killed: a page fetched before still reads, a new one raises SIGBUS" \
    grep -Eqx "signal SIG(BUS|SEGV) at $((4 * 1048576))" "$tmp/out"
ok "...within 10 s" test $(($(date +%s) - t0)) -lt 10
ok "...with one line naming the export, the offset and why" \
    eval "test \"\$(grep -c . '$tmp/err')\" = 1 &&
          grep -q 'libr3map: $vuri: reading offset 4194304 .* failed: ' '$tmp/err'"

# --- a server that stops answering ---------------------------------------
start_server stuck file "$tmp/disk"
stuck=$(cat "$tmp/stuck.pid")
cleanup_fn "kill -CONT $stuck"
t0=$(date +%s)
LIBR3MAP_TIMEOUT=1 $SLICETEST touch --stop="$stuck" "$(cat "$tmp/stuck.uri")" 0 \
    > "$tmp/out" 2> "$tmp/err"
sed 's/^/# /' "$tmp/out" "$tmp/err"
ok "server stopped (SIGSTOP), LIBR3MAP_TIMEOUT=1: SIGBUS, not a hang" \
    grep -Eqx "signal SIG(BUS|SEGV) at 0" "$tmp/out"
ok "...after the three tries, within 15 s" test $(($(date +%s) - t0)) -lt 15
ok "...saying it timed out" grep -q "timed out" "$tmp/err"
kill -CONT $stuck

# --- writes that cannot be sent ------------------------------------------
start_server lost file "$tmp/disk"
LIBR3MAP_TIMEOUT=5 each_check $SLICETEST lose "$(cat "$tmp/lost.uri")" \
    "$(cat "$tmp/lost.pid")"

done_testing
