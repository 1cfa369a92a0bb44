#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A remote that fails: with nbdkit's error filter every read fails and
# a read of a missing chunk gets EIO after the retries, in bounded time;
# with some reads failing the retries hide it; with the delay filter
# everything is slow but right.  A remote that is killed: reads of
# missing chunks fail, the background pull waits, and when the remote
# comes back on the same socket the pull completes and the disk is
# the remote's.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-io --version
requires timeout --version

filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
head -c 8M /dev/urandom > "$tmp/remote"

ok "every remote read failing: a read fails with an I/O error" \
    timeout 60 nbdkit -U - --filter="$filter" --filter=error file "$tmp/remote" \
        error-pread=EIO error-pread-rate=1 cache="$tmp/cache" \
        retries=2 retry-delay=10ms pull-workers=1 \
        --run "qemu-io -f raw -c 'read 0 4k' \"\$uri\" 2>&1 | grep -q 'Input/output error'"

ok "a third of the remote reads failing: retries hide it" \
    timeout 120 nbdkit -U - --filter="$filter" --filter=error file "$tmp/remote" \
        error-pread=EIO error-pread-rate=0.3 cache="$tmp/cache" chunk-size=16K \
        retries=20 retry-delay=1ms pull-workers=2 \
        --run "nbdcopy \"\$uri\" '$tmp/out'"
ok "... and the data is the remote's" cmp "$tmp/remote" "$tmp/out"

rm -f "$tmp/out"
ok "a remote with 50ms of latency: reads are right" \
    timeout 120 nbdkit -U - --filter="$filter" --filter=delay file "$tmp/remote" \
        delay-read=50ms delay-write=50ms cache="$tmp/cache" chunk-size=16K \
        --run "nbdcopy \"\$uri\" '$tmp/out'"
ok "... and the data is the remote's" cmp "$tmp/remote" "$tmp/out"

# ---- The remote killed and restarted ---------------------------------

phase () { "$r3map" status "$tmp/status" | sed -n 's/^phase: *//p'; }
phase_is () { test "$(phase)" = "$1"; }

start_server remote --filter=delay file "$tmp/remote" delay-read=50ms
truncate -s 8M "$tmp/local"
ok "the leecher starts" \
    start_server leech --filter="$filter" file "$tmp/local" \
        source="$(cat "$tmp/remote.uri")" chunk-size=4K pull-workers=1 \
        retries=1 retry-delay=20ms status="$tmp/status"
uri=$(cat "$tmp/leech.uri")
ok "the pull is running" wait_until 30 phase_is pulling
ok "a read makes one chunk local" qemu-io -f raw -c "read 0 4k" "$uri"
stop_server remote KILL
ok "with the remote gone the pull waits for it" \
    wait_until 30 phase_is "waiting for the remote"
ok "a read of a missing chunk fails, and does not hang" \
    bash -c "timeout 30 qemu-io -f raw -c 'read $((8 * 1048576 - 4096)) 4k' '$uri' 2>&1 |
             grep -q 'Input/output error'"
ok "a local chunk is still served" qemu-io -f raw -c "read 0 4k" "$uri"
ok "the remote comes back" \
    start_server remote --filter=delay file "$tmp/remote" delay-read=1ms
ok "the pull resumes and completes" wait_until 60 phase_is complete
ok "the disk is the remote's" nbdcopy "$uri" "$tmp/out2"
ok "... byte for byte" cmp "$tmp/remote" "$tmp/out2"
stop_server leech

done_testing
