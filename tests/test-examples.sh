#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The programs in examples/, as a user would run them: checksum walks
# an export as memory and must print what cksum(1) prints for the file
# behind the server (an export whose size is not a whole number of
# pages, directly and through r3map-pull); write-verify writes through
# memory, syncs, and has another process read the bytes back; the
# backend file must then hold them.

. "$srcdir/functions.sh"
requires_root

CHECKSUM="$abs_top_builddir/examples/checksum"
WRITE_VERIFY="$abs_top_builddir/examples/write-verify"
filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"

# 20 MiB and 1000 bytes: the last page is partly past the end.
head -c $((20 * 1048576 + 1000)) /dev/urandom > "$tmp/disk"
start_server remote file "$tmp/disk"
uri=$(cat "$tmp/remote.uri")

if [ -n "$R3MAP_VALGRIND" ]; then
    ok "under valgrind, checksum fails at once, saying why" \
        eval "! timeout 60 $(valgrind_expecting_enosys) $CHECKSUM '$uri' \
              2> '$tmp/err' && grep -q valgrind '$tmp/err'"
    ok "...and valgrind reports nothing but the system call" valgrind_only_enosys
    skip_check "running the examples: valgrind does not implement" \
        "userfaultfd(2) (ENOSYS), which libr3map is built on"
    done_testing
    exit
fi

want=$(cksum < "$tmp/disk")
ok "checksum: the export as memory has cksum(1)'s CRC and size" \
    test "$($CHECKSUM "$uri")" = "$want"
truncate -s $((20 * 1048576 + 1000)) "$tmp/local"
ok "checksum through r3map-pull (managed mount), the same" \
    eval "test \"\$(nbdkit -U - --filter='$filter' file '$tmp/local' \
                   source='$uri' --run '$CHECKSUM \"\$uri\"')\" = '$want'"

ok "write-verify: written through memory, read back by another process" \
    $WRITE_VERIFY "$uri" 12345 "hello, r3map"
ok "...and in the backend file" \
    test "$(dd if="$tmp/disk" bs=1 skip=12345 count=12 status=none)" = "hello, r3map"
end=$((20 * 1048576 + 1000 - 5))
ok "write-verify in the last, partial page" $WRITE_VERIFY "$uri" $end "tail!"
ok "...in the backend, which kept its size" \
    eval "test \"\$(tail -c 5 '$tmp/disk')\" = 'tail!' &&
          test \$(stat -c %s '$tmp/disk') = $((20 * 1048576 + 1000))"
ok "write-verify refuses text past the end, saying so" \
    eval "! $WRITE_VERIFY '$uri' $end 'too long' 2> '$tmp/err' &&
          grep -q 'does not fit' '$tmp/err'"

done_testing
