# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sourced by every shell test.  Tests print TAP (automake's tap-driver
# reads it), run nbdkit captive (-U - --run) so that nothing outlives
# them, and keep every file under one private temporary directory that
# a trap removes whatever happens.
#
#   . ./functions.sh            (from $srcdir)
#   requires qemu-img --version   skip the whole test, saying why
#   ok "what is checked" command args...
#   cmd_fails "what" command...   passes if the command fails
#   one_error PATTERN command...  the command fails with one line: a
#                                 bad-usage check
#   done_testing
#
# R3MAP_VALGRIND=1 (make check-valgrind) runs every nbdkit, unit test
# and test program under valgrind; a valgrind error fails the test.

set -u

: "${abs_top_builddir:=$(cd "${top_builddir:-..}" && pwd)}"
: "${abs_top_srcdir:=$(cd "${top_srcdir:-..}" && pwd)}"
: "${R3MAP_VALGRIND:=}"

# Every server a test talks to is on this machine: a proxy from the
# environment (CI machines often set one for apt) must not see, delay
# or refuse that traffic.  libcurl, curl, awscli and boto3 all read
# these.
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export no_proxy='*' NO_PROXY='*'

_tap_n=0
_tap_failed=0
_cleanup_fns=""

tmp=$(mktemp -d "${TMPDIR:-/tmp}/r3map-test.XXXXXXXX")

# Functions named here run at exit, last registered first.
cleanup_fn ()
{
    _cleanup_fns="$* ; $_cleanup_fns"
}

_on_exit ()
{
    local status=$? f
    eval "$_cleanup_fns" >/dev/null 2>&1
    # Servers started where cleanup_fn could not see them (start_server
    # run under ok, i.e. in a subshell) are found by their pid files.
    for f in "$tmp"/*.pid; do
        [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
    done
    rm -rf "$tmp"
    exit $status
}
trap _on_exit EXIT
trap 'exit 130' INT TERM

# Skip the whole test: TAP "1..0 # SKIP" with the reason.
skip_all ()
{
    echo "1..0 # SKIP $*"
    exit 0
}

# Skip unless the command runs.
requires ()
{
    "$@" >/dev/null 2>&1 || skip_all "needs '$*'"
}

requires_root ()
{
    [ "$(id -u)" = 0 ] || skip_all "needs root"
}

# ok DESCRIPTION COMMAND...: one TAP line; the command's output is kept
# as a TAP comment if it fails.
ok ()
{
    local desc="$1" out start=$SECONDS
    shift
    _tap_n=$((_tap_n + 1))
    if out=$("$@" 2>&1); then
        echo "ok $_tap_n - $desc"
    else
        echo "not ok $_tap_n - $desc"
        printf '%s\n' "$out" | sed 's/^/# /'
        _tap_failed=$((_tap_failed + 1))
    fi
    # Slow checks say so, to show where a test's time goes.
    [ $((SECONDS - start)) -lt 10 ] || echo "# ($((SECONDS - start)) s)"
}

# cmd_fails DESCRIPTION COMMAND...: passes if the command exits non-zero.
cmd_fails ()
{
    local desc="$1"
    shift
    ok "$desc" _negate "$@"
}

_negate ()
{
    if "$@"; then return 1; else return 0; fi
}

done_testing ()
{
    # Valgrind writes one log per process and runs --quiet, so a log
    # that is not empty holds errors, whichever process (a forked
    # nbdkit, a --run command) they came from.
    if [ -n "$R3MAP_VALGRIND" ]; then
        ok "valgrind reported no errors" _valgrind_clean
    fi
    echo "1..$_tap_n"
    # How long the test took, against run-sh's limit.
    echo "# $_tap_n checks in $SECONDS s"
    [ "$_tap_failed" = 0 ]
}

_valgrind_clean ()
{
    local logs
    logs=$(find "$tmp" -name 'valgrind.*' -size +0)
    [ -z "$logs" ] && return 0
    cat $logs
    return 1
}

# refused PATTERN NBDKIT-ARGS...: nbdkit refuses to start: it exits 1
# (not a signal, not valgrind's 119), prints exactly one line, and the
# line matches PATTERN.
refused ()
{
    local want="$1" status
    shift
    nbdkit "$@" --run true 2>"$tmp/err"
    status=$?
    cat "$tmp/err"
    test $status = 1 &&
        test "$(grep -c . "$tmp/err")" = 1 &&
        grep -q -- "$want" "$tmp/err"
}

# The plugin built in this tree.
plugin ()
{
    echo "$abs_top_builddir/plugins/$1/.libs/nbdkit-r3map-$1-plugin.so"
}

# Programs this tree builds for the tests, as command strings usable
# inside nbdkit --run (which runs /bin/sh: shell functions are not
# seen there).  Under check-valgrind they run under valgrind too.
_valgrind="valgrind --quiet --log-file=$tmp/valgrind.%p --leak-check=full \
--show-leak-kinds=definite --errors-for-leak-kinds=definite \
--suppressions=$abs_top_srcdir/tests/valgrind.supp \
--error-exitcode=119 --trace-children=no"
IOTEST="$abs_top_builddir/tests/r3map-iotest"
[ -n "$R3MAP_VALGRIND" ] && IOTEST="$_valgrind $IOTEST"

# model_ops N: how many operations a model-checker run does: N, or a
# quarter of it under valgrind, where each costs 20-50 times more.  The
# memory checks want every code path, which a quarter still walks; the
# plain and ASan runs do the full count for the races.
model_ops ()
{
    if [ -n "$R3MAP_VALGRIND" ]; then echo $(( $1 / 4 )); else echo "$1"; fi
}

# nbdkit, run under valgrind when the suite asks for it.  --run
# commands are not traced (valgrind does not follow children), so only
# nbdkit and the plugin are checked.
NBDKIT_BIN=$(command -v nbdkit)
nbdkit ()
{
    _wrap "$NBDKIT_BIN" "$@"
}

_wrap ()
{
    if [ -n "$R3MAP_VALGRIND" ]; then
        $_valgrind "$@"
    else
        "$@"
    fi
}

# The r3map command, as a command string like $IOTEST: under valgrind
# too when the suite asks.  The nbdkit that its seed, leech and migrate
# start is R3MAP_NBDKIT: under valgrind as well, through a script,
# since r3map runs one program.
R3MAP="$abs_top_builddir/tools/r3map"
if [ -n "$R3MAP_VALGRIND" ]; then
    R3MAP="$_valgrind $R3MAP"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$_valgrind" "$NBDKIT_BIN" \
        > "$tmp/nbdkit-valgrind"
    chmod +x "$tmp/nbdkit-valgrind"
    export R3MAP_NBDKIT="$tmp/nbdkit-valgrind"
fi

# one_error PATTERN COMMAND...: the command fails with exit status 1
# (not a signal, not valgrind's 119) and exactly one line on stderr,
# which matches PATTERN.
one_error ()
{
    local want="$1" status
    shift
    "$@" >/dev/null 2>"$tmp/err"
    status=$?
    cat "$tmp/err"
    test $status = 1 &&
        test "$(grep -c . "$tmp/err")" = 1 &&
        grep -q -- "$want" "$tmp/err"
}

# sha256 of a file, alone.
sha ()
{
    sha256sum "$1" | cut -d' ' -f1
}

# status_field STATUS-FILE KEY: one field of `r3map status --json`.
status_field ()
{
    "$abs_top_builddir/tools/r3map" status --json "$1" |
        /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.1s until it
# succeeds (0) or SECONDS pass (1).
wait_until ()
{
    local n=$(($1 * 10))
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ $n -gt 0 ] || return 1
        sleep 0.1
    done
}

# start_server NAME NBDKIT-ARGS...: an nbdkit in the background on the
# socket $tmp/NAME.sock (its URI in $tmp/NAME.uri), its pid in
# $tmp/NAME.pid, killed at exit whatever happens.
start_server ()
{
    local name="$1"
    shift
    rm -f "$tmp/$name.sock" "$tmp/$name.pid"
    nbdkit -U "$tmp/$name.sock" -P "$tmp/$name.pid" "$@" || return 1
    wait_until 60 test -s "$tmp/$name.pid" || return 1
    echo "nbd+unix:///?socket=$tmp/$name.sock" > "$tmp/$name.uri"
    cleanup_fn "kill -9 $(cat "$tmp/$name.pid")"
}

# start_logged NAME NBDKIT-ARGS...: the same, but nbdkit stays in the
# foreground of a background job so that its messages go to
# $tmp/NAME.log (a daemonized nbdkit has no stderr).
start_logged ()
{
    local name="$1"
    shift
    rm -f "$tmp/$name.sock" "$tmp/$name.pid"
    nbdkit -f -U "$tmp/$name.sock" -P "$tmp/$name.pid" "$@" \
        2>>"$tmp/$name.log" &
    local job=$! n=600
    # Until it listens, or gives up (a bad start is an exit, not a wait).
    until [ -S "$tmp/$name.sock" ]; do
        kill -0 $job 2>/dev/null || { sed 's/^/# /' "$tmp/$name.log"; return 1; }
        n=$((n - 1)); [ $n -gt 0 ] || return 1
        sleep 0.1
    done
    wait_until 60 test -s "$tmp/$name.pid" || return 1
    echo "nbd+unix:///?socket=$tmp/$name.sock" > "$tmp/$name.uri"
    cleanup_fn "kill -9 $(cat "$tmp/$name.pid") 2>/dev/null"
}

# stop_server NAME [SIGNAL]: stop it (TERM: nbdkit cleans up; KILL: a
# crash) and wait until it is gone.
stop_server ()
{
    local pid
    [ -s "$tmp/$1.pid" ] || return 0
    pid=$(cat "$tmp/$1.pid")
    kill -"${2:-TERM}" "$pid" 2>/dev/null
    wait_until 120 _gone "$pid" || return 1
    rm -f "$tmp/$1.pid"
}

_gone ()
{
    ! kill -0 "$1" 2>/dev/null
}

# skip_check REASON: one TAP line that counts as skipped, for a check
# that cannot run here (the rest of the test runs).
skip_check ()
{
    _tap_n=$((_tap_n + 1))
    echo "ok $_tap_n # SKIP $*"
}

# valgrind_expecting_enosys: the valgrind command line for a program
# that calls userfaultfd(2), which valgrind does not implement: it
# warns about the system call (that warning is expected, not an
# error), so this run logs to $tmp/uffd-vg.PID instead, and
# valgrind_only_enosys checks that nothing else was reported.
valgrind_expecting_enosys ()
{
    echo "${_valgrind/--log-file=$tmp\/valgrind.%p/--log-file=$tmp/uffd-vg.%p}"
}
valgrind_only_enosys ()
{
    local logs
    logs=$(find "$tmp" -name 'uffd-vg.*')
    [ -n "$logs" ] || return 1
    cat $logs
    ! cat $logs | grep -v -e 'unhandled amd64-linux syscall: 323' \
        -e 'write your own handler' -e 'README_MISSING_SYSCALL_OR_IOCTL' \
        -e 'we consider this a bug' -e 'valgrind.org/support/bug_reports' |
        grep -q .
}
