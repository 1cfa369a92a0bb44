#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# virsh migrate --live --persistent --undefinesource of the test guest
# on an r3map-dir disk, while the guest writes, from A to B (two
# libvirtd in mount namespaces of their own on this machine, over
# loopback) and on to C (a third, in a network namespace of its own,
# reached over TCP through a veth pair).  The disk moves with r3map
# alone: each hook starts a leecher from the previous host's seeder,
# each watcher seals its host's seeder when the guest stops there.
# At the end the guest verifies every block it ever wrote, on A, B or
# C, and the disk lives on C's storage alone.

. "$srcdir/../tests/functions.sh"
. "$srcdir/../tests/hook-functions.sh"
. "$srcdir/qemu-functions.sh"
. "$srcdir/libvirt-functions.sh"
requires_guest
requires_libvirt

r3map="$abs_top_builddir/tools/r3map"
uuid=7c6b5a49-3827-4615-a4b3-c2d1e0f9a8b7
run () { echo "$tmp/lv-$1/run/r3map/$uuid"; }
disk () { echo "$tmp/lv-$1/lib/r3map/disks/vm1-vda"; }

lv_netns C
lv_start A 127.0.0.1
lv_start B "$LV_HOST_IP_C" 0.0.0.0
lv_start C "$LV_IP_C"
mkdir -p "$tmp/lv-B/run/r3map-test" "$tmp/lv-C/run/r3map-test"

running_on () { test "$(lv_state "$1" vm1)" = running; }
gone_from () { ! lv_virsh "$1" list --all --name | grep -qx vm1; }
persistent_on () { lv_virsh "$1" dominfo vm1 | grep -q '^Persistent: *yes'; }
nothing_left_on () { test -z "$(lv_r3map_processes "$1")" && ! test -e "$(run "$1")"; }
finalized_on () { "$r3map" status "$(run "$1")/vda.status" | tee /dev/stderr | grep -q '^finalized: [0-9]'; }
renamed_aside () { ! test -e "$(disk "$1")" && ls -d "$(disk "$1")".migrated-*; }
console_passed () { lv_console "$1" vm1 | grep '^R3MAP-RESULT' | tail -n 3; lv_console "$1" vm1 | grep -q "^R3MAP-RESULT: PASS $2"; }
migrate ()
{
    local from=$1 to=$2 uri=$3 start=$SECONDS
    lv_virsh "$from" migrate --live --persistent --undefinesource vm1 \
        "$to" --migrateuri "$uri" > "$tmp/migrate.out" 2>&1
    local status=$?
    cat "$tmp/migrate.out"
    echo "# migrate took $((SECONDS - start)) s"
    return $status
}
port () { echo $(( 49152 + RANDOM % 10000 )); }

lv_define A vm1 $uuid "r3map.work=writer r3map.size=16M r3map.report=1 r3map.sync=64"
ok "A: virsh start, the guest writes" lv_virsh A start vm1
ok "  (it writes)" wait_until 120 lv_console_has A vm1 'writer: seq [1-9][0-9]* written'
ok "A: the watcher published the seeder" wait_until 30 bash -c "
    timeout 20 virsh -q -c '$(lv_uri A)' dumpxml vm1 | grep -q '<r3map:seeder host=\"127.0.0.1\"'"

# --- A -> B ------------------------------------------------------------------
ok "A -> B: virsh migrate --live --persistent --undefinesource, while it writes" \
    migrate A "$(lv_uri B)" "tcp://127.0.0.1:$(port)"
ok "B: the domain runs, persistent" running_on B
ok "  persistent" persistent_on B
ok "A: the domain is gone (undefined)" gone_from A
ok "A: the watcher sealed the disk when the source stopped" \
    grep -q 'vm1: suspended for migration: sealed .* at write [0-9]*' "$tmp/lv-A/log/r3map-hook.log"
grep 'sealed' "$tmp/lv-A/log/r3map-hook.log" | sed 's/^/# /'
ok "B: the leecher finalized" finalized_on B
ok "A: once B holds the whole disk, A's seeder stops, nothing left" wait_until 60 nothing_left_on A
ok "A: its copy, now older than B's, is renamed aside" renamed_aside A
ok "B: the guest goes on writing" wait_until 60 bash -c "
    test \$(tr -d '\r' < '$tmp/lv-B/run/r3map-test/vm1.serial' | grep -c 'writer: seq') -ge 2"
lv_serial B vm1 verify
ok "B: the guest verifies every block it wrote, on A and on B" \
    wait_until 60 console_passed B "writer-verify 1: [1-9][0-9]* blocks ever written hold their latest write"
ok "B: the watcher published B's seeder" wait_until 30 bash -c "
    timeout 20 virsh -q -c '$(lv_uri B)' dumpxml vm1 | grep -q '<r3map:seeder host=\"$LV_HOST_IP_C\"'"

# --- B -> C, over TCP, into another network namespace -------------------------
ok "B -> C (qemu+tcp into a network namespace): virsh migrate, while it writes" \
    migrate B "qemu+tcp://$LV_IP_C/system" "tcp://$LV_IP_C:$(port)"
ok "C: the domain runs, persistent" running_on C
ok "  persistent" persistent_on C
ok "B: the domain is gone" gone_from B
ok "C: the leecher finalized" finalized_on C
ok "B: once C holds the whole disk, B's seeder stops, nothing left" wait_until 60 nothing_left_on B
ok "B: its copy is renamed aside" renamed_aside B

lv_serial C vm1 stop
ok "C: the guest stops, verifying every block it ever wrote, and powers off" \
    wait_until 120 console_passed C "writer-final: [1-9][0-9]* blocks ever written hold their latest write"
ok "  (no block wrong)" _negate grep -q 'R3MAP-RESULT: FAIL' <(lv_console C vm1)
ok "C: shut off, and nothing left" wait_until 30 nothing_left_on C
ok "the disk lives on C's storage alone" bash -c "
    ls '$(disk C)' | grep -q . && ! test -e '$(disk A)' && ! test -e '$(disk B)'"
lv_hook_log C | grep -v starting | sed 's/^/# C: /'
done_testing
