#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A full file system: the client gets ENOSPC, nbdkit stays up, and
# what was written and flushed before is intact, then and after a
# restart.  The small file system is a 1 MiB tmpfs mounted in a
# private mount namespace, so it cannot outlive the test.

. "$srcdir/functions.sh"
requires_root
requires unshare --mount true
requires qemu-io --version

mkdir "$tmp/small"
cat > "$tmp/run.sh" <<SCRIPT
mount -t tmpfs -o size=1M tmpfs "$tmp/small" || exit 77
plugin="$(plugin dir)"
nbdkit -U - "\$plugin" "$tmp/small" size=8M chunk-size=64K --run '
  qemu-io -f raw -c "write -P 0x5a 0 512K" -c flush "\$uri" > "$tmp/first.out" &&
  ! qemu-io -f raw -c "write -P 0x77 1M 4M" "\$uri" > "$tmp/full.out" 2>&1 &&
  qemu-io -f raw -c "read -P 0x5a 0 512K" "\$uri" > "$tmp/after.out" 2>&1 &&
  qemu-io -f raw -c "write -P 0x66 4K 4K" -c "read -P 0x66 4K 4K" "\$uri" > "$tmp/still.out" 2>&1
' || exit 1
nbdkit -U - "\$plugin" "$tmp/small" --run '
  qemu-io -f raw -c "read -P 0x5a 0 4K" -c "read -P 0x66 4K 4K" \
     -c "read -P 0x5a 8K 504K" "\$uri" > "$tmp/restart.out" 2>&1
'
SCRIPT
unshare --mount --propagation private bash "$tmp/run.sh" 2>"$tmp/run.err"
status=$?
[ $status = 77 ] && skip_all "cannot mount a tmpfs here"
ok "writing past the free space fails, earlier writes succeed" test $status = 0
ok "the client sees ENOSPC" grep -q "No space left on device" "$tmp/full.out"
ok "data written before is intact" bash -c "! grep -qi fail '$tmp/after.out'"
ok "nbdkit still serves writes that fit" bash -c "! grep -qi fail '$tmp/still.out'"
ok "after a restart the data is intact" bash -c "! grep -qi fail '$tmp/restart.out'"

done_testing
