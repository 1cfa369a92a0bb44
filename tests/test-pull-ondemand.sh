#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Reads right after start, long before the background pull is done,
# return the remote's data: the whole device is read at once and its
# sha256 compared with the remote's, in both topologies, with and
# without background pull.  Every chunk is fetched once.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-io --version

filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
head -c 24M /dev/urandom > "$tmp/remote"
want=$(sha "$tmp/remote")
truncate -s 24M "$tmp/local"

start_server remote --filter=log --filter=delay file "$tmp/remote" \
    delay-read=10ms logfile="$tmp/remote.log"
uri=$(cat "$tmp/remote.uri")

# Bytes the remote was asked to read since log line $1.
remote_read_bytes ()
{
    tail -n +"$1" "$tmp/remote.log" |
        sed -n 's/.* Read .*count=\(0x[0-9a-f]*\).*/\1/p' |
        { n=0; while read -r c; do n=$((n + c)); done; echo $n; }
}

# The status file is rewritten a few times a second: read it after a
# pause.
for workers in 0 4; do
    rm -f "$tmp/out"
    start_line=$(($(wc -l < "$tmp/remote.log") + 1))
    ok "source= pull-workers=$workers: a full read at start is the remote's" \
        nbdkit -U - --filter="$filter" file "$tmp/local" source="$uri" \
            chunk-size=4K pull-workers=$workers status="$tmp/status" \
            --run "qemu-io -r -f raw -c 'read $((24 * 1048576 - 4096)) 4k' \"\$uri\" &&
                   nbdcopy \"\$uri\" '$tmp/out' && sleep 0.5 && $r3map status '$tmp/status' > '$tmp/st'"
    ok "source= pull-workers=$workers: sha256 matches" test "$(sha "$tmp/out")" = "$want"
    # The last chunk first: the background pull starts at the other end
    # and cannot have reached it, however slow the client is to start.
    ok "source= pull-workers=$workers: reads were fetched on demand" \
        grep "^on demand: *[1-9]" "$tmp/st"
    ok "source= pull-workers=$workers: each byte was read from the remote once" \
        test "$(remote_read_bytes "$start_line")" = $((24 * 1024 * 1024))
done

rm -f "$tmp/out"
ok "cache=: a full read at start is the remote's" \
    nbdkit -U - --filter="$filter" --filter=delay file "$tmp/remote" \
        delay-read=10ms cache="$tmp/cache" \
        --run "nbdcopy \"\$uri\" '$tmp/out'"
ok "cache=: sha256 matches" test "$(sha "$tmp/out")" = "$want"

done_testing
