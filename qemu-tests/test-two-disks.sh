#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# (make check-qemu) One guest, two r3map-dir disks from two nbdkit
# servers, attached in two syntaxes: a pattern over both, then the
# writer across both, as the two-disk migration test will run it.

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires_guest

mkdir "$tmp/a" "$tmp/b"
nbdkit_start a "$(plugin dir)" "$tmp/a" size=32M
nbdkit_start b "$(plugin dir)" "$tmp/b" size=16M chunk-size=256K
disks="$(disk_nbd_uri "$tmp/a.sock") $(disk_blockdev "$tmp/b.sock" disk1)"

# shellcheck disable=SC2086
guest_run p "r3map.work=pattern r3map.disks=vda,vdb r3map.seed=9" $disks
ok "a pattern over both disks, whole" guest_passed p "pattern-verify 50331648 bytes"

# shellcheck disable=SC2086
guest_run w "r3map.work=writer r3map.disks=vda,vdb r3map.seconds=10 r3map.rate=4" $disks
ok "the writer across both disks verified every block" \
    guest_passed w "writer-final: [1-9][0-9]* blocks ever written"
ok "it wrote across both disks" bash -c "
    tr -d '\r' < '$tmp/w.serial' | grep -q 'writer: run [0-9a-f]*, 2 device(s), 12288 blocks'"

nbdkit_stop b
nbdkit_stop a
done_testing
