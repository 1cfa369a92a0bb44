#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map mount --file: an export as a file through nbdfuse.  Data goes
# both ways (written through the file, read through NBD, and back),
# the server-running form works, and nothing is left behind when
# r3map is stopped, when nbdfuse is killed (the dead mount is
# unmounted and the mount point usable again), when r3map itself is
# killed with SIGKILL, or when a server fails to start.

. "$srcdir/functions.sh"
requires_root
requires nbdfuse --version
requires nbdcopy --version
requires test -c /dev/fuse
requires fusermount3 -V

R3MAP="$abs_top_builddir/tools/r3map"
[ -n "$R3MAP_VALGRIND" ] && R3MAP="$_valgrind $R3MAP"
# r3map's private socket directory goes here, so that we can see it go.
mkdir "$tmp/t" "$tmp/mp"
export TMPDIR="$tmp/t"
mp="$tmp/mp"

mounted ()
{
    awk -v p="$mp" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}
not_mounted () { ! mounted; }

# _status_is N COMMAND...: the command exits with status N.
_status_is ()
{
    local want=$1
    shift
    "$@"
    [ $? = "$want" ]
}

cleanup_fn "fusermount3 -uz '$mp'"

head -c 16M /dev/urandom > "$tmp/data"
truncate -s 16M "$tmp/disk"
start_server remote file "$tmp/disk"
uri=$(cat "$tmp/remote.uri")

# --- data, both ways ---------------------------------------------------
ok "write through the file" \
    $R3MAP mount --file "$uri" "$mp" \
        --run "dd if='$tmp/data' of=\"\$file\" bs=1M conv=notrunc,fsync status=none"
ok "...unmounted after --run" not_mounted
nbdcopy "$uri" "$tmp/back"
ok "...and read back through NBD, the same bytes" cmp "$tmp/data" "$tmp/back"

head -c 16M /dev/urandom > "$tmp/data2"
nbdcopy "$tmp/data2" "$uri"
ok "read through a read-only file what NBD wrote" \
    $R3MAP mount --file -r "$uri" "$mp" --run "cat \"\$file\" > '$tmp/read'"
ok "...the same bytes" cmp "$tmp/data2" "$tmp/read"
ok "a write through a read-only file fails" \
    $R3MAP mount --file --readonly "$uri" "$mp" \
        --run "! dd if=/dev/zero of=\"\$file\" bs=4k count=1 conv=notrunc status=none"
ok "--run's exit status is r3map's" \
    _status_is 3 $R3MAP mount --file "$uri" "$mp" --run "exit 3"
# _term_ends PID: SIGTERM to r3map (PID): it exits 128+15, and
# nothing is left mounted.
_term_ends ()
{
    local status
    kill -TERM $1
    wait $1
    status=$?
    [ $status = 143 ] || { echo "exit status $status, not 143"; return 1; }
    not_mounted || { echo "$mp is still mounted"; return 1; }
}
# While --run's command runs.
term_during_run ()
{
    ( exec $R3MAP mount --file "$uri" "$mp" --run "sleep 60" > /dev/null 2>&1 ) &
    local pid=$!
    wait_until 30 mounted || return 1
    _term_ends $pid
}
ok "a signal during --run: exit 143, unmounted" term_during_run
# Before r3map saw the file ready (the server is slow to answer).
term_during_setup ()
{
    ( exec $R3MAP mount --file "$mp" --run "sleep 60" \
        -- nbdkit --filter=delay memory 1M delay-open=30 > /dev/null 2>&1 ) &
    local pid=$!
    sleep 1
    _term_ends $pid
}
ok "a signal during the set-up: exit 143, unmounted" term_during_setup

# --- r3map runs the server ---------------------------------------------
cp "$tmp/data" "$tmp/disk2"
want=$(sha "$tmp/data")
ok "-- nbdkit ...: the server's export, as a file" \
    $R3MAP mount --file "$mp" --run "sha256sum < \"\$file\" > '$tmp/sum'" \
        -- nbdkit file "$tmp/disk2"
ok "...its sha256" test "$(cut -d' ' -f1 "$tmp/sum")" = "$want"
ok "...its socket directory is gone" test -z "$(ls -A "$tmp/t")"

# --- stopping and killing ----------------------------------------------
# Start r3map mount in the background (its pid is that of r3map,
# through exec) and wait until it prints the file's path.
start_mount ()
{
    rm -f "$tmp/mount.out" "$tmp/mount.err"
    ( exec $R3MAP mount --file "$mp" -- nbdkit file "$tmp/disk2" \
          > "$tmp/mount.out" 2> "$tmp/mount.err" ) &
    rpid=$! fuse_pid='' server_pid=''
    cleanup_fn "kill -9 $rpid"
    wait_until 30 test -s "$tmp/mount.out" || return 1
    fuse_pid=$(pgrep -P $rpid -x nbdfuse)
    server_pid=$(pgrep -P $rpid -x nbdkit)
}

all_gone ()
{
    local p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && return 1; done
    return 0
}

start_mount
ok "background mount is ready, with nbdfuse and the server" \
    test -n "$fuse_pid" -a -n "$server_pid"
ok "...the file reads" cmp "$tmp/data" "$(cat "$tmp/mount.out")"
kill -TERM $rpid
wait $rpid
status=$?
ok "SIGTERM: r3map exits 0" test $status = 0
ok "...unmounted" not_mounted
ok "...nbdfuse and the server are gone" wait_until 10 all_gone $fuse_pid $server_pid
ok "...the mount point is an empty directory again" test -z "$(ls -A "$mp")"

start_mount
ok "background mount is ready, with nbdfuse and the server" \
    test -n "$fuse_pid" -a -n "$server_pid"
kill -9 $fuse_pid
wait $rpid
status=$?
ok "nbdfuse killed with SIGKILL: r3map exits 1" test $status = 1
ok "...and says why" grep -q "nbdfuse was killed by signal 9" "$tmp/mount.err"
ok "...the dead mount is unmounted" not_mounted
ok "...the mount point is usable again" test -z "$(ls -A "$mp")"
ok "...the server is gone" wait_until 10 all_gone $server_pid
ok "...and the mount point takes a new mount" \
    $R3MAP mount --file "$uri" "$mp" --run "test -s \"\$file\""

start_mount
ok "background mount is ready, with nbdfuse and the server" \
    test -n "$fuse_pid" -a -n "$server_pid"
{ kill -9 $rpid; wait $rpid; } 2>/dev/null
ok "r3map killed with SIGKILL: nbdfuse and the server follow" \
    wait_until 10 all_gone $fuse_pid $server_pid
ok "...and nothing is mounted" not_mounted
ok "...the mount point is usable again" test -z "$(ls -A "$mp")"
# (A killed r3map cannot remove its socket directory; r3map(1) says so.)
rm -rf "${tmp:?}"/t/*

# A dead mount left by a killed nbdfuse that r3map did not watch.
rm -f "$tmp/fuse.pid"
( exec nbdfuse -P "$tmp/fuse.pid" "$mp" "$uri" ) &
lone=$!
cleanup_fn "kill -9 $lone"
wait_until 30 test -s "$tmp/fuse.pid"
{ kill -9 $lone; wait $lone; } 2>/dev/null
ok "a dead mount on PATH (ENOTCONN)" _negate stat "$mp"
remount () {
    $R3MAP mount --file "$uri" "$mp" --run 'test -s "$file"' 2> "$tmp/err"
}
ok "...r3map unmounts it and mounts" remount
ok "...saying so" grep -q "was a dead FUSE mount" "$tmp/err"
ok "...and leaves nothing mounted" not_mounted

# --- errors --------------------------------------------------------------
# One line naming what is wrong, a non-zero exit, nothing left mounted.
one_line_fails ()
{
    local want="$1" status
    shift
    "$@" > /dev/null 2> "$tmp/err"
    status=$?
    cat "$tmp/err"
    test $status -ne 0 && test "$(grep -c . "$tmp/err")" = 1 &&
        grep -q -- "$want" "$tmp/err"
}
ok "no such mount point: one line" \
    one_line_fails "$tmp/nonexistent" $R3MAP mount --file "$uri" "$tmp/nonexistent"
t0=$(date +%s)
ok "a server that cannot start: says so, nothing mounted" \
    eval "! timeout 20 $R3MAP mount --file '$mp' -- nbdkit no-such-plugin 2> '$tmp/err' &&
          grep -q 'server (nbdkit) exited' '$tmp/err' && not_mounted"
ok "...at once (within 5 s)" test $(($(date +%s) - t0)) -lt 5
ok "no --file or --device: usage error" _status_is 2 $R3MAP mount "$uri" "$mp"
ok "one operand too many: usage error" \
    _status_is 2 $R3MAP mount --file "$uri" "$mp" extra
ok "nothing after --: usage error" _status_is 2 $R3MAP mount --file "$mp" --
ok "no socket directory left after all that" test -z "$(ls -A "$tmp/t")"

done_testing
