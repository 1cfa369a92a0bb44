#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A real guest on an r3map-s3 disk in a real S3 server (s3rver behind
# the signature-checking proxy, ../tests/s3-server.sh): the guest
# writes a pattern through -drive with the NBD URI, a second boot reads
# it back through -blockdev, and the host finds it in the bucket.

. "$srcdir/../tests/functions.sh"
. "$srcdir/../tests/s3-server.sh"
. "$srcdir/qemu-functions.sh"
requires nbdcopy --version
requires curl --version
requires_guest
start_s3 "$tmp/s3"

B=r3map-qemu
make_bucket "$B" || _s3_bail "cannot create bucket $B"

size=4M
[ -n "$R3MAP_QEMU_FULL" ] && size=32M
seed=$((RANDOM * 32768 + RANDOM + 1))
work="r3map.size=$size r3map.seed=$seed"

nbdkit_start s "$(plugin s3)" bucket="$B" key=vm1 size=64M object-size=256K \
    endpoint="$S3_ENDPOINT" access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY"
sock="$tmp/s.sock"

# shellcheck disable=SC2046
guest_run w "r3map.work=pattern-write $work" $(disk_nbd_uri "$sock")
ok "-drive file=nbd+unix:///?socket=SOCK: the guest wrote the pattern to S3" \
    guest_passed w pattern-write

# shellcheck disable=SC2046
guest_run r "r3map.work=pattern-verify $work" $(disk_blockdev "$sock" disk0)
ok "-blockdev driver=nbd: the guest reads it back from S3" guest_passed r pattern-verify

nbdkit_stop s
objects ()
{
    s3_curl -f "$S3_ENDPOINT/$B?list-type=2&prefix=vm1/" |
        grep -o '<Key>vm1/[0-9a-f]\{16\}</Key>' | wc -l
}
ok "the bucket holds the written part: $(( ${size%M} * 4 )) objects vm1/%016x" \
    test "$(objects)" = $(( ${size%M} * 4 ))
ok "a fresh nbdkit reads the pattern back on the host" \
    nbdkit -U - "$(plugin s3)" bucket="$B" key=vm1 size=64M object-size=256K \
        endpoint="$S3_ENDPOINT" access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY" \
        --run "nbdcopy \"\$uri\" '$tmp/image' &&
               '$GUEST_IO' pattern-verify --size $size --seed $seed '$tmp/image'"

done_testing
