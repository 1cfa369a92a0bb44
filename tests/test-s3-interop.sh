#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-s3 and nbdkit's own S3 plugin (Python, boto3) share one
# layout: a disk written by either reads back identically through the
# other, holes included.  Both talk to s3rver behind the
# SigV4-verifying proxy.  nbdkit 1.32's S3 plugin takes objects of at
# most 64K, so that is the size used here.

. "$srcdir/functions.sh"
. "$srcdir/s3-server.sh"
requires nbdcopy --version
requires qemu-io --version
requires nbdinfo --version
# The Python plugin and boto3 (nbdkit-plugin-python, python3-boto3).
requires nbdkit S3 --dump-plugin
requires /usr/bin/python3 -c 'import boto3'
start_s3 "$tmp/s3"

B=interop
make_bucket "$B" || _s3_bail "cannot create bucket $B"
geometry="size=4M object-size=64K"

r3 ()
{
    nbdkit -U - "$(plugin s3)" bucket="$B" endpoint="$S3_ENDPOINT" \
        access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY" "$@"
}
theirs ()
{
    nbdkit -U - S3 bucket="$B" endpoint-url="$S3_ENDPOINT" \
        access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY" "$@"
}
export -f nbdkit _wrap r3 theirs plugin
export NBDKIT_BIN _valgrind R3MAP_VALGRIND B S3_ENDPOINT S3_ACCESS_KEY \
    S3_SECRET_KEY abs_top_builddir tmp geometry

# The reference image: random data with a hole in the middle (objects
# 32-47) and a partly written last object.
head -c $((2 * 1024 * 1024)) /dev/urandom > "$tmp/image"
head -c $((1024 * 1024)) /dev/zero >> "$tmp/image"
head -c $((1024 * 1024 - 100)) /dev/urandom >> "$tmp/image"
head -c 100 /dev/zero >> "$tmp/image"

# --- nbdkit S3 writes, r3map-s3 reads ---------------------------------
# qemu-io -s takes a file to write from its start: cut the tail out.
tail -c $((1024 * 1024)) "$tmp/image" > "$tmp/image.tail"
ok "nbdkit S3 writes the image (head and tail, the middle never written)" \
    theirs key=a $geometry \
        --run "qemu-io -f raw -c 'write -s $tmp/image 0 2M' \
                              -c 'write -s $tmp/image.tail 3M 1M' \"\$uri\""
ok "r3map-s3 reads the same bytes" bash -c "
    r3 key=a $geometry --run 'nbdcopy \"\$uri\" $tmp/a.out' &&
    cmp $tmp/image $tmp/a.out"
ok "r3map-s3 sees the never-written objects as a hole" bash -c "
    r3 key=a $geometry --run 'nbdinfo --map \"\$uri\"' |
        awk '{print \$1, \$2, \$3}' > $tmp/a.map; cat $tmp/a.map;
    printf '0 2097152 0\n2097152 1048576 3\n3145728 1048576 0\n' | cmp - $tmp/a.map"

# --- r3map-s3 writes, nbdkit S3 reads ---------------------------------
ok "r3map-s3 writes the image (nbdcopy skips the zeros)" \
    r3 key=b $geometry --run "nbdcopy --connections=4 '$tmp/image' \"\$uri\""
ok "r3map-s3 then an unaligned write across objects 10-12" \
    r3 key=b $geometry \
        --run "qemu-io -f raw -c 'write -P 0x5a 700000 100000' \"\$uri\""
cp "$tmp/image" "$tmp/b.expect"
printf '\x5a%.0s' $(seq 100000) |
    dd of="$tmp/b.expect" bs=1 seek=700000 conv=notrunc status=none
ok "nbdkit S3 reads the same bytes" bash -c "
    theirs key=b $geometry --run 'nbdcopy \"\$uri\" $tmp/b.out' &&
    cmp $tmp/b.expect $tmp/b.out"
ok "r3map-s3 trims objects 4-7, nbdkit S3 reads zeros there" bash -c "
    r3 key=b $geometry --run 'qemu-io -f raw -c \"discard 256K 256K\" \"\$uri\"' &&
    theirs key=b $geometry \
        --run 'qemu-io -f raw -c \"read -P 0 256K 256K\" -c \"read -P 0x5a 700000 100000\" \"\$uri\"'"

done_testing
