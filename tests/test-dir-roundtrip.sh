#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Data written to r3map-dir with stock NBD tools reads back identically:
# nbdcopy (multi-conn), qemu-img convert, and qemu-io pattern I/O at
# offsets that straddle chunk boundaries.  The disk size is deliberately
# not a multiple of the chunk size, so the short last chunk is covered.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-img --version
requires qemu-io --version

size=$((24 * 1024 * 1024 + 12345))
head -c $size /dev/urandom > "$tmp/in"

# nbdcopy: 4 connections by default, and multi-conn is advertised.
mkdir "$tmp/d1"
ok "nbdcopy in and out of r3map-dir" \
    nbdkit -U - "$(plugin dir)" dir="$tmp/d1" size=$size chunk-size=4K \
        --run "nbdcopy '$tmp/in' \"\$uri\" && nbdcopy \"\$uri\" '$tmp/out1'"
ok "nbdcopy round trip keeps the sha256" \
    test "$(sha "$tmp/in")" = "$(sha "$tmp/out1")"

# qemu-img convert, into and out of a disk with another chunk size.
# (QEMU sees raw files in whole sectors, so this size is a multiple of
# 512, but still ends in a short 1M chunk.)
size2=$((24 * 1024 * 1024 + 12288))
head -c $size2 "$tmp/in" > "$tmp/in2"
mkdir "$tmp/d2"
ok "qemu-img convert in and out of r3map-dir" \
    nbdkit -U - "$(plugin dir)" "$tmp/d2" size=$size2 chunk-size=1M \
        --run "qemu-img convert -n -f raw -O raw '$tmp/in2' \"\$uri\" &&
               qemu-img convert -f raw -O raw \"\$uri\" '$tmp/out2'"
ok "qemu-img round trip keeps the sha256" \
    test "$(sha "$tmp/in2")" = "$(sha "$tmp/out2")"

# The disk survives nbdkit: a second nbdkit reads the same bytes.
ok "data persists across nbdkit restarts" \
    nbdkit -U - "$(plugin dir)" "$tmp/d2" \
        --run "nbdcopy \"\$uri\" '$tmp/out3'"
ok "restarted disk keeps the sha256" \
    test "$(sha "$tmp/in2")" = "$(sha "$tmp/out3")"

# qemu-io patterns across chunk boundaries (64K chunks).
mkdir "$tmp/d3"
cat > "$tmp/qemu-io.sh" <<'SCRIPT'
qemu-io -f raw "$1" \
    -c 'write -P 0xab 65000 200000' \
    -c 'write -P 0xcd 131071 2' \
    -c 'write -P 0x11 0 1' \
    -c 'write -z 300000 70000' \
    -c 'read -P 0xab 65000 66071' \
    -c 'read -P 0xcd 131071 2' \
    -c 'read -P 0xab 131073 133927' \
    -c 'read -P 0x11 0 1' \
    -c 'read -P 0 1 64999' \
    -c 'read -P 0 300000 70000' \
    -c 'read -P 0 370000 1000000' \
    -c 'flush'
SCRIPT
ok "qemu-io pattern writes read back across chunk boundaries" \
    nbdkit -U - "$(plugin dir)" "$tmp/d3" size=4M \
        --run "sh '$tmp/qemu-io.sh' \"\$uri\" > '$tmp/qemu-io.out' 2>&1 &&
               ! grep -q -i -e 'fail' -e 'error' '$tmp/qemu-io.out'"

done_testing
