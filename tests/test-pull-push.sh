#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Write-back: once a client's flush returns, the remote itself (read
# directly, with nbdkit still running) holds exactly what the client
# wrote, in both topologies; with push=off it is never written.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-io --version

filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
head -c 16M /dev/urandom > "$tmp/initial"
head -c 5M /dev/urandom > "$tmp/data"
truncate -s 16M "$tmp/local"

# What the disk must be: the initial data, 5M of new data at 3M+123,
# and 0x55 over 100000 bytes at 9M-7.
cp "$tmp/initial" "$tmp/want"
dd if="$tmp/data" of="$tmp/want" bs=1 seek=$((3 * 1048576 + 123)) conv=notrunc status=none
head -c 100000 /dev/zero | tr '\0' 'U' |
    dd of="$tmp/want" bs=1 seek=$((9 * 1048576 - 7)) conv=notrunc status=none

# Write with qemu-io, flush, then compare the remote's file while
# nbdkit still runs.  push-interval is long: only the flush can have
# pushed.
write_and_check="qemu-io -f raw -c 'write -s $tmp/data $((3 * 1048576 + 123)) 5M' \
  -c 'write -P 0x55 $((9 * 1048576 - 7)) 100000' -c flush \"\$uri\" >/dev/null &&
cmp '$tmp/want' \"\$REMOTE\""

cp "$tmp/initial" "$tmp/remote-b"
ok "cache=: after flush the remote holds what was written" \
    env REMOTE="$tmp/remote-b" \
    nbdkit -U - --filter="$filter" file "$tmp/remote-b" \
        cache="$tmp/cache" push-interval=1h --run "$write_and_check"

cp "$tmp/initial" "$tmp/remote-a"
start_server remote-a file "$tmp/remote-a"
ok "source= push=on: after flush the remote holds what was written" \
    env REMOTE="$tmp/remote-a" \
    nbdkit -U - --filter="$filter" file "$tmp/local" \
        source="$(cat "$tmp/remote-a.uri")" push=on push-interval=1h \
        --run "$write_and_check"

cp "$tmp/initial" "$tmp/remote-a"
ok "source= push=off: the local store holds what was written" \
    nbdkit -U - --filter="$filter" file "$tmp/local" \
        source="$(cat "$tmp/remote-a.uri")" \
        --run "qemu-io -f raw -c 'write -s $tmp/data $((3 * 1048576 + 123)) 5M' \
  -c 'write -P 0x55 $((9 * 1048576 - 7)) 100000' -c flush \"\$uri\" >/dev/null &&
nbdcopy \"\$uri\" '$tmp/out'"
ok "source= push=off: it reads back" cmp "$tmp/want" "$tmp/out"
ok "source= push=off: the remote was not written" cmp "$tmp/initial" "$tmp/remote-a"

done_testing
