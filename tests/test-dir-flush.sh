#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Flush means durable: watch the system calls of nbdkit (strace) while a
# client writes and flushes, and check that the chunk file that was
# written is synced, and the directory that gained it too, before the
# flush is answered; and that a FUA write is synced by itself.

. "$srcdir/functions.sh"
requires strace -V
requires qemu-io --version

mkdir "$tmp/disk"
trace ()
{
    # Plain nbdkit: strace and valgrind do not stack.  One trace file
    # per thread (-ff), so that no call is split across lines by
    # another thread's; descriptors are shared, so they are joined.
    rm -f "$tmp"/trace*
    strace -ff -qq -o "$tmp/trace" -e trace=openat,fdatasync,fsync,syncfs \
        "$NBDKIT_BIN" -U - "$(plugin dir)" "$tmp/disk" size=1M --run "$1" &&
    cat "$tmp"/trace.* > "$tmp/trace"
}

# qemu-io runs -t writeback so that its writes are plain writes: in its
# default writethrough mode every write carries FUA.

# The file descriptor that openat returned for NAME, from the trace.
fd_of ()
{
    grep -E "openat\(.*\"$1\".*= [0-9]+$" "$tmp/trace" | tail -n1 | sed 's/.*= //'
}

ok "write then flush" \
    trace "qemu-io -f raw -t writeback -c 'write -P 7 70000 4096' -c flush \"\$uri\""
chunk=$(fd_of 0000000000000001)
dirfd=$(grep -E "openat\(.*O_DIRECTORY.*= [0-9]+$" "$tmp/trace" | head -n1 | sed 's/.*= //')
ok "the chunk file was opened" test -n "$chunk"
ok "the written chunk file was synced" grep -qE "fdatasync\($chunk\) += 0" "$tmp/trace"
ok "the directory that gained it was synced" grep -qE "fsync\($dirfd\) += 0" "$tmp/trace"

rm -rf "$tmp/disk"/0*
ok "write with FUA, no flush" \
    trace "qemu-io -f raw -t writeback -c 'write -f -P 7 0 4096' \"\$uri\""
chunk=$(fd_of 0000000000000000)
ok "the FUA write's chunk file was synced" grep -qE "fdatasync\($chunk\) += 0" "$tmp/trace"

done_testing
