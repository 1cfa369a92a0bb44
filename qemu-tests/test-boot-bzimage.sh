#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# (make check-qemu) The guest booted the usual way, from Debian's
# compressed bzImage through the PC firmware, rather than through the
# PVH entry of the uncompressed vmlinux the other tests use.

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires_guest
[ "$GUEST_KERNEL_KIND" = pvh ] || skip_all "the other tests boot the bzImage already"
GUEST_KERNEL=$GUEST_BZIMAGE

mkdir "$tmp/disk"
nbdkit_start d "$(plugin dir)" "$tmp/disk" size=64M

# shellcheck disable=SC2046
guest_run z "r3map.work=pattern r3map.size=16M r3map.seed=5" $(disk_nbd_old "$tmp/d.sock")
ok "bzImage: the guest wrote and verified the pattern" guest_passed z pattern-verify

nbdkit_stop d
done_testing
