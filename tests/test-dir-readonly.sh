#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A read-only directory (a read-only bind mount, in a private mount
# namespace so nothing outlives the test): an existing disk is served
# read-only, a new one is refused with one clear line.

. "$srcdir/functions.sh"
requires_root
requires unshare --mount true
requires qemu-io --version
requires nbdinfo --version

mkdir "$tmp/disk" "$tmp/new" "$tmp/ro" "$tmp/ronew"
head -c 1M /dev/urandom > "$tmp/in"
ok "create a disk" \
    nbdkit -U - "$(plugin dir)" "$tmp/disk" size=1M \
        --run "nbdcopy '$tmp/in' \"\$uri\""

# in_ro COMMAND: run COMMAND with $tmp/ro a read-only view of
# $tmp/disk and $tmp/ronew a read-only view of the empty $tmp/new.
cat > "$tmp/in_ro.sh" <<SCRIPT
set -e
mount --bind "$tmp/disk" "$tmp/ro"
mount -o remount,bind,ro "$tmp/ro"
mount --bind "$tmp/new" "$tmp/ronew"
mount -o remount,bind,ro "$tmp/ronew"
"\$@"
SCRIPT
in_ro () { unshare --mount --propagation private bash "$tmp/in_ro.sh" "$@"; }

ok "an existing disk in a read-only directory is served" \
    in_ro nbdkit -U - "$(plugin dir)" "$tmp/ro" \
        --run "nbdcopy \"\$uri\" '$tmp/out' &&
               nbdinfo \"\$uri\" > '$tmp/info' &&
               ! qemu-io -f raw -c 'write 0 512' \"\$uri\" > '$tmp/write' 2>&1"
ok "it reads back the data" cmp "$tmp/in" "$tmp/out"
ok "it is advertised read-only" grep -q "is_read_only: true" "$tmp/info"

ok "a new disk in a read-only directory is refused with one line" \
    bash -c "! in_ro_out=\$(unshare --mount --propagation private bash '$tmp/in_ro.sh' \
                 '$(command -v nbdkit)' '$(plugin dir)' '$tmp/ronew' size=1M --run true 2>&1) &&
             echo \"\$in_ro_out\" &&
             test \"\$(echo \"\$in_ro_out\" | grep -c .)\" = 1 &&
             echo \"\$in_ro_out\" | grep -q 'dir=$tmp/ronew: cannot create a disk here: Read-only file system'"
ok "and nothing was written" test -z "$(ls -A "$tmp/new")"

done_testing
