#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# examples/checksum on an S3-backed disk: r3map-s3 in a real S3
# server (s3rver), behind r3map-pull with a local cache (the managed
# mount a program would map), walked as memory; the CRC must be that
# of the data put in the bucket, and stay so after a restart, with
# every chunk served from the managed mount's cache.

. "$srcdir/functions.sh"
. "$srcdir/s3-server.sh"
requires_root
requires nbdcopy --version

if [ -n "$R3MAP_VALGRIND" ]; then
    skip_all "valgrind does not implement userfaultfd(2) (ENOSYS), which" \
        "libr3map is built on; test-examples.sh checks that it says so"
fi
start_s3 "$tmp/s3"
B=r3map-test
make_bucket "$B" || _s3_bail "cannot create bucket $B"

CHECKSUM="$abs_top_builddir/examples/checksum"
filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
s3args=(bucket="$B" key=disk size=8M object-size=64K endpoint="$S3_ENDPOINT"
        access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY")

head -c 8M /dev/urandom > "$tmp/data"
ok "8M of random data into the bucket" \
    nbdkit -U - "$(plugin s3)" "${s3args[@]}" --run "nbdcopy '$tmp/data' \"\$uri\""
want=$(cksum < "$tmp/data")
managed ()
{
    nbdkit -U - --filter="$filter" "$(plugin s3)" "${s3args[@]}" \
        cache="$tmp/cache" state="$tmp/state" --run "$CHECKSUM \"\$uri\""
}
ok "checksum of the S3 disk as memory, through r3map-pull cache=" \
    test "$(managed)" = "$want"
disk_gets () { grep -c "^GET /$B/disk/" "$tmp/s3proxy.log"; }
before=$(disk_gets)
ok "...again, after a restart of the managed mount" test "$(managed)" = "$want"
ok "...served from its cache: no object read from S3 again" \
    test "$(disk_gets)" = "$before"
ok "...while the first run read from S3 ($before GETs)" test "$before" -gt 0

done_testing
