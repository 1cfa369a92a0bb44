#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A real guest on an r3map-dir disk, attached in each of QEMU's three
# ways: -drive with the old nbd:unix: syntax writes a pattern, then
# -drive with the NBD URI and -blockdev driver=nbd read it back.  The
# host checks independently that the pattern is in the chunk files,
# and a damaged chunk makes the guest's own check fail.

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires nbdcopy --version
requires_guest

size=8M
[ -n "$R3MAP_QEMU_FULL" ] && size=64M
seed=$((RANDOM * 32768 + RANDOM + 1))
work="r3map.size=$size r3map.seed=$seed"

mkdir "$tmp/disk"
nbdkit_start d "$(plugin dir)" "$tmp/disk" size=64M
sock="$tmp/d.sock"

# shellcheck disable=SC2046
guest_run w "r3map.work=pattern-write $work" $(disk_nbd_old "$sock")
ok "-drive file=nbd:unix:SOCK: the guest wrote the pattern" guest_passed w pattern-write

ok "the host reads the same pattern from the export" bash -c "
    nbdcopy 'nbd+unix:///?socket=$sock' '$tmp/image' &&
    '$GUEST_IO' pattern-verify --size $size --seed $seed '$tmp/image'"
ok "and it lives in r3map-dir's chunk files" bash -c "
    ls '$tmp/disk' | grep -c '^[0-9a-f]\{16\}\$' | grep -qx $(( $(echo $size | tr -d M) * 16 ))"

# shellcheck disable=SC2046
guest_run u "r3map.work=pattern-verify $work" $(disk_nbd_uri "$sock")
ok "-drive file=nbd+unix:///?socket=SOCK: the guest reads it back" \
    guest_passed u pattern-verify

# shellcheck disable=SC2046
guest_run b "r3map.work=pattern-verify $work" $(disk_blockdev "$sock" disk0)
ok "-blockdev driver=nbd: the guest reads it back" guest_passed b pattern-verify

# Damage 512 bytes in the middle of chunk 3, in place.
dd if=/dev/zero of="$tmp/disk/0000000000000003" bs=512 seek=7 count=1 \
   conv=notrunc status=none
# shellcheck disable=SC2046
guest_run bad "r3map.work=pattern-verify $work" $(disk_nbd_uri "$sock")
ok "a damaged chunk: the guest's check fails at that very sector" \
    guest_failed bad "pattern-verify 1 bad sectors of [0-9]*, the first at byte $((3 * 65536 + 7 * 512)) "

nbdkit_stop d
done_testing
