#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The guest's checksummed writer on an r3map-dir disk, as the
# live-migration tests will run it: timed, then driven from the host
# (QMP stop/cont, commands typed on the serial console), and a block
# damaged behind the guest's back must make its own check fail.

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires_guest

secs=3
[ -n "$R3MAP_QEMU_FULL" ] && secs=20
work="r3map.work=writer r3map.size=16M r3map.report=0.5"

mkdir "$tmp/disk"
nbdkit_start d "$(plugin dir)" "$tmp/disk" size=16M
sock="$tmp/d.sock"

# --- Timed --------------------------------------------------------------
# shellcheck disable=SC2046
guest_run t "$work r3map.seconds=$secs r3map.sync=256" $(disk_nbd_uri "$sock")
ok "a writer of $secs s verified every block it wrote" \
    guest_passed t "writer-final: [1-9][0-9]* blocks ever written"
ok "it reported its progress on the console" bash -c "
    test \$(tr -d '\r' < '$tmp/t.serial' | grep -c 'writer: seq [1-9][0-9]* written') -ge 2"

# --- Driven from the host -------------------------------------------------
# On a fresh disk, so that every block header on it is of this run.
mkdir "$tmp/disk2"
nbdkit_start d2 "$(plugin dir)" "$tmp/disk2" size=16M
# shellcheck disable=SC2046
guest_start c "$work" $(disk_blockdev "$tmp/d2.sock" disk0)
ok "the writer is writing" guest_wait_line c 'writer: seq [1-9][0-9]* written' 60
ok "QMP: the guest runs" guest_qmp c status running
ok "QMP: stop, then cont" \
    guest_qmp c cmd stop status paused cmd cont status running
guest_serial c verify
ok "a verify typed on the console passes mid-run" \
    guest_wait_line c '^R3MAP-RESULT: PASS writer-verify 1: [1-9]' 60
guest_serial c pause
ok "the writer pauses on command" guest_wait_line c 'writer: paused at seq' 30

# Flip one payload byte of one written block, in its chunk file.
damage ()
{
    /usr/bin/python3 - "$tmp/disk2" <<'PY'
import os, struct, sys
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "r+b") as f:
        data = f.read()
        for off in range(0, len(data), 4096):
            if struct.unpack_from("<Q", data, off)[0] == 0x5233574B424C4B31:
                f.seek(off + 2000)
                f.write(bytes([data[off + 2000] ^ 0xff]))
                print("damaged block %d" % ((int(name, 16) * 65536 + off) // 4096))
                sys.exit(0)
sys.exit(1)
PY
}
ok "one written block damaged behind the guest's back" damage
guest_serial c verify
ok "the guest's next verify finds exactly that block" \
    guest_wait_line c '^R3MAP-RESULT: FAIL writer-verify 2: 1 of 4096 blocks wrong' 60
guest_serial c stop
guest_wait c
ok "on stop it verifies once more and powers off" test "$(cat "$tmp/c.status")" = 0
ok "the final verify fails too" guest_failed c 'writer-final: 1 of 4096'
ok "and named the damage a bad checksum" bash -c "
    tr -d '\r' < '$tmp/c.serial' | grep -q 'block [0-9]* (last seq [0-9]*): bad checksum'"

nbdkit_stop d2
nbdkit_stop d
done_testing
