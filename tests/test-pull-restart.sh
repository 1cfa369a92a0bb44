#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Restarts after kill -9 with the same state file.
#
# Mid-pull: the chunks the state file records local are not fetched
# again (the remote's log counts every byte it is asked to read after
# the restart: exactly the chunks that were not recorded), and the
# local copy ends up equal to the remote.
#
# Mid-push: a write whose flush was acknowledged is in the remote the
# moment nbdkit is killed, and after a restart and a clean stop the
# remote and the disk served agree.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-io --version

filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
chunk=4096
nchunks=4096                    # 16M

# ---- Mid-pull, source= ------------------------------------------------

head -c 16M /dev/urandom > "$tmp/remote"
truncate -s 16M "$tmp/local"
start_server remote --filter=log --filter=delay file "$tmp/remote" \
    delay-read=40ms logfile="$tmp/remote.log"
leech="--filter=$filter file $tmp/local source=$(cat "$tmp/remote.uri")
  chunk-size=$chunk pull-workers=2 state=$tmp/state status=$tmp/status"

status_field () { "$r3map" status "$tmp/status" | sed -n "s/^$1: *//p"; }
local_chunks () { "$r3map" status "$1" | sed -n 's/^local: *\([0-9]*\) of.*/\1/p'; }
recorded_some () { test "$(local_chunks "$tmp/state")" -gt 0; }
is_complete () { status_field phase | grep -qx complete; }

# Bytes the remote was asked to read after log line $1.
remote_read_bytes ()
{
    tail -n +"$1" "$tmp/remote.log" |
        sed -n 's/.* Read .*count=\(0x[0-9a-f]*\).*/\1/p' |
        { n=0; while read -r c; do n=$((n + c)); done; echo $n; }
}

ok "the leecher starts" start_server leech $leech
ok "chunks get recorded in the state file" wait_until 60 recorded_some
stop_server leech KILL
recorded=$(local_chunks "$tmp/state")
ok "killed mid-pull ($recorded of $nchunks chunks recorded)" \
    test "$recorded" -gt 0 -a "$recorded" -lt $nchunks

line=$(($(wc -l < "$tmp/remote.log") + 1))
ok "the leecher restarts on the same state file" start_server leech $leech
ok "the pull completes" wait_until 120 is_complete
ok "it stops cleanly" stop_server leech
ok "no recorded chunk was fetched again" \
    test "$(remote_read_bytes $line)" = $(((nchunks - recorded) * chunk))
ok "the local copy is the remote's" cmp "$tmp/remote" "$tmp/local"
ok "the state file records every chunk" \
    test "$(local_chunks "$tmp/state")" = $nchunks
stop_server remote

# ---- Mid-push, cache= -------------------------------------------------

head -c 16M /dev/urandom > "$tmp/remote-b"
mount_args="--filter=$filter file $tmp/remote-b cache=$tmp/cache
  state=$tmp/state-b chunk-size=$chunk push-interval=100ms"
ok "the managed mount starts (slow writes to the remote)" \
    start_server mnt --filter=$filter --filter=delay file "$tmp/remote-b" \
        delay-write=20ms cache="$tmp/cache" state="$tmp/state-b" \
        chunk-size=$chunk push-interval=100ms
uri=$(cat "$tmp/mnt.uri")
ok "a write is flushed" \
    qemu-io -f raw -c "write -P 0x11 1M 1M" -c flush "$uri"
head -c 1M /dev/zero | tr '\0' '\021' > "$tmp/w1"
# A second, larger write whose flush is still pushing when nbdkit dies.
qemu-io -f raw -c "write -P 0x22 8M 4M" -c flush "$uri" >/dev/null 2>&1 &
qemu_pid=$!
sleep 1
stop_server mnt KILL
wait $qemu_pid
ok "the flushed write is in the remote after kill -9" \
    cmp -n 1048576 "$tmp/w1" <(tail -c +$((1048576 + 1)) "$tmp/remote-b")
ok "the second flush had not finished pushing" \
    bash -c "! cmp -s <(head -c 4M /dev/zero | tr '\0' '\042') \
                      <(tail -c +$((8 * 1048576 + 1)) '$tmp/remote-b' | head -c 4M)"

ok "the mount restarts on the same state file" start_server mnt $mount_args
uri=$(cat "$tmp/mnt.uri")
ok "the flushed write is served" \
    bash -c "nbdcopy '$uri' '$tmp/out' &&
             cmp -n 1048576 '$tmp/w1' <(tail -c +$((1048576 + 1)) '$tmp/out')"
ok "it stops cleanly, pushing what was left" stop_server mnt
ok "the remote holds what was served" cmp "$tmp/out" "$tmp/remote-b"

done_testing
