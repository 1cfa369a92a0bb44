#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A real libvirtd (in its own mount namespace) runs the test guest on
# an r3map-dir disk, with r3map-hook installed and r3map-libvirt watch
# beside it: virsh start starts the disk's nbdkit before QEMU, the
# guest's data outlives a stop, and a stop by the guest (poweroff) or
# by virsh destroy leaves no process, socket or file behind.  A guest
# whose disk was sealed under it (a migration cancelled after the seal)
# runs on with nothing lost once the watcher unseals.  A start whose
# disk cannot be served fails with the hook's reason.
#
# virsh shutdown is the guest's own poweroff here: the test guest has
# no ACPI daemon to act on the power button, and for libvirt and the
# hook both end the same way (stopped end, release end).

. "$srcdir/../tests/functions.sh"
. "$srcdir/../tests/hook-functions.sh"
. "$srcdir/qemu-functions.sh"
. "$srcdir/libvirt-functions.sh"
requires_guest
requires_libvirt
requires nbdinfo --version

uuid=5a0b9c8d-7e6f-4a5b-8c9d-0e1f2a3b4c5d
run="$tmp/lv-A/run/r3map/$uuid"

hook_processes () { test -n "$(lv_r3map_processes A)"; }
nothing_left_A () { test -z "$(lv_r3map_processes A)" && ! test -e "$run"; }
state_is () { test "$(lv_state A vm1)" = "$1"; }
passed () { lv_console A vm1 | grep '^R3MAP-RESULT'; lv_console A vm1 | grep -q "^R3MAP-RESULT: PASS $1"; }
published ()
{
    local h p e
    read -r h p e < "$run/vda.seed"
    lv_virsh A dumpxml vm1 | grep "r3map:seeder"
    lv_virsh A dumpxml vm1 | grep -q "<r3map:seeder host=\"$h\" port=\"$p\" epoch=\"$e\"/>"
}
# control CTL COMMAND: one command on r3map-track's control socket.
control ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); print(s.recv(200).decode().strip())
PY
}
start_refused ()
{
    lv_virsh A start vm1 2> "$tmp/err" && return 1
    cat "$tmp/err"
    grep -q "$1" "$tmp/err"
}

lv_start A
ok "libvirtd and the watcher run" bash -c "
    grep -q 'watching qemu:///system' '$tmp/lv-A/log/r3map-hook.log'"

# --- A boot that writes, one that verifies --------------------------------
lv_define A vm1 $uuid "r3map.work=pattern-write r3map.size=16M r3map.seed=4242"
ok "virsh start" lv_virsh A start vm1
ok "the hook started the disk's nbdkit and its gateway" hook_processes
ok "QEMU's disk is the socket the hook serves" bash -c "
    test \"\$(nbdinfo --size 'nbd+unix:///?socket=$run/vda.sock')\" = 16777216"
ok "the watcher published where the disk is seeded, with this seeder's epoch" \
    wait_until 30 published
ok "only in the live XML" _negate grep -q 'r3map:seeder' <(lv_virsh A dumpxml --inactive vm1)
ok "the guest wrote its pattern and powered off" wait_until 120 state_is "shut off"
ok "  it passed" passed pattern-write
ok "a stop by the guest leaves nothing behind" wait_until 20 nothing_left_A
ok "  and the hook says it stopped the disk" grep -q 'vm1 vda: stopped' "$tmp/lv-A/log/r3map-hook.log"

sed -i 's|r3map.work=pattern-write|r3map.work=pattern-verify|' "$tmp/vm1.xml"
lv_virsh A define "$tmp/vm1.xml" >/dev/null
: > "$tmp/lv-A/run/r3map-test/vm1.serial"
ok "virsh start again, the guest verifies what it wrote" lv_virsh A start vm1
ok "  and powers off" wait_until 120 state_is "shut off"
ok "  every sector holds the pattern" passed pattern-verify

# --- virsh destroy while the guest writes ---------------------------------
sed -i 's|r3map.work=pattern-verify|r3map.work=writer r3map.report=1|' "$tmp/vm1.xml"
lv_virsh A define "$tmp/vm1.xml" >/dev/null
: > "$tmp/lv-A/run/r3map-test/vm1.serial"
ok "virsh start, a writer" lv_virsh A start vm1
ok "  it writes" wait_until 120 lv_console_has A vm1 'writer: seq [1-9][0-9]* written'

# A migration cancelled after the seal, as the source sees it: the
# disk is sealed, the guest runs again and writes before the watcher
# unseals.  The refused write pauses the guest (error_policy='stop'),
# the watcher unseals on the resumption and resumes it, QEMU writes
# again: nothing is lost.
ok "the disk sealed under the running guest" control "$run/vda.ctl" seal
ok "  its next write is refused: the guest pauses on an I/O error" \
    wait_until 60 bash -c "timeout 20 virsh -q -c '$(lv_uri A)' domstate --reason vm1 |
        grep -q 'paused (I/O error)'"
ok "virsh resume: the watcher unseals, and the guest runs" lv_virsh A resume vm1
ok "  running" wait_until 60 state_is running
ok "  unsealed" wait_until 30 bash -c "$(declare -f control); control '$run/vda.ctl' status | grep -q 'sealed=no'"
ok "  the watcher said so" grep -q 'vm1: runs here again: unsealed' "$tmp/lv-A/log/r3map-hook.log"
grep 'resumed\|unsealed' "$tmp/lv-A/log/r3map-hook.log" | sed 's/^/# /'
n_before=$(lv_console A vm1 | grep -c 'writer: seq')
ok "  the writer goes on" wait_until 60 bash -c "
    test \$(tr -d '\r' < '$tmp/lv-A/run/r3map-test/vm1.serial' | grep -c 'writer: seq') -gt $n_before"
lv_serial A vm1 verify
ok "  and every block it wrote holds its last write" \
    wait_until 60 passed "writer-verify 1: [1-9][0-9]* blocks ever written hold their latest write"

ok "virsh destroy" lv_virsh A destroy vm1
ok "leaves no process, socket or file behind" wait_until 20 nothing_left_A
ok "  no nbdkit of the domain at all" _negate pgrep -f -- "$uuid"

# --- A start the hook refuses ----------------------------------------------
mv "$tmp/lv-A/lib/r3map/disks/vm1-vda" "$tmp/lv-A/lib/r3map/disks/elsewhere"
ok "virsh start of a domain whose disk is missing fails with the hook's reason" \
    start_refused 'disk vda: nbdkit exited at start (status 1): .*No such file or directory'
ok "  the domain is shut off" state_is "shut off"
ok "  nothing left" nothing_left_A
mv "$tmp/lv-A/lib/r3map/disks/elsewhere" "$tmp/lv-A/lib/r3map/disks/vm1-vda"

ok "virsh undefine" lv_virsh A undefine vm1
lv_stop A
done_testing
