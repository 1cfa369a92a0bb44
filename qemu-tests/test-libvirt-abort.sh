#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# virsh domjobabort during a live migration of the writing test guest
# from A to B (two libvirtd in mount namespaces of their own): the
# guest keeps running on A with its disk intact (it verifies every
# block it wrote), A's seeder is not sealed, and B is cleaned up: no
# domain, no leecher, no partial copy.  The migration then succeeds
# when tried again.
#
# The migration is made slow (1 MiB/s for the guest's RAM) so that the
# abort lands while B's leecher pulls the disk.

. "$srcdir/../tests/functions.sh"
. "$srcdir/../tests/hook-functions.sh"
. "$srcdir/qemu-functions.sh"
. "$srcdir/libvirt-functions.sh"
requires_guest
requires_libvirt

r3map="$abs_top_builddir/tools/r3map"
uuid=2f3e4d5c-6b7a-4980-a1b2-c3d4e5f60718
runA="$tmp/lv-A/run/r3map/$uuid"
runB="$tmp/lv-B/run/r3map/$uuid"
lv_start A
lv_start B
mkdir -p "$tmp/lv-B/run/r3map-test"

running_on () { test "$(lv_state "$1" vm1)" = running; }
gone_from () { ! lv_virsh "$1" list --all --name | grep -qx vm1; }
leeching () { "$r3map" status "$runB/vda.status" 2>/dev/null | grep -q 'local: .*[1-9][0-9]* of'; }
nothing_left_B () { test -z "$(lv_r3map_processes B)" && ! test -e "$runB"; }
not_sealed_A () {
    /usr/bin/python3 - "$runA/vda.ctl" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"status\n"); a = s.recv(200).decode(); print(a.strip())
sys.exit(0 if " sealed=no " in a else 1)
PY
}
console_passed () { lv_console "$1" vm1 | grep '^R3MAP-RESULT' | tail -n 2; lv_console "$1" vm1 | grep -q "^R3MAP-RESULT: PASS $2"; }
migrate_exited () { ! kill -0 "$migrate_pid" 2>/dev/null; }

lv_define A vm1 $uuid "r3map.work=writer r3map.size=16M r3map.report=1 r3map.sync=64"
ok "A: virsh start, the guest writes" lv_virsh A start vm1
ok "  (it writes)" wait_until 120 lv_console_has A vm1 'writer: seq [1-9][0-9]* written'
ok "A: the seeder is published" wait_until 30 bash -c "
    timeout 20 virsh -q -c '$(lv_uri A)' dumpxml vm1 | grep -q '<r3map:seeder '"

# A migration that takes minutes, run by virsh in the background.
port=$(( 49152 + RANDOM % 10000 ))
timeout 300 virsh -q -c "$(lv_uri A)" migrate --live --persistent --undefinesource \
    --bandwidth 1 vm1 "$(lv_uri B)" --migrateuri "tcp://127.0.0.1:$port" \
    > "$tmp/migrate.out" 2>&1 &
migrate_pid=$!
ok "B: the incoming migration's leecher pulls the disk" wait_until 120 leeching
ok "A: virsh domjobabort" lv_virsh A domjobabort vm1
ok "the migration fails" wait_until 60 migrate_exited
wait "$migrate_pid"
migrate_status=$?
sed 's/^/# virsh migrate: /' "$tmp/migrate.out"
ok "  (virsh migrate exited non-zero)" test "$migrate_status" != 0
ok "A: the guest still runs" running_on A
ok "A: its seeder is not sealed" not_sealed_A
ok "B: no domain" wait_until 30 gone_from B
ok "B: no leecher, no gateway, no file" wait_until 30 nothing_left_B
ok "B: the partial copy is removed" bash -c "
    ! test -e '$tmp/lv-B/lib/r3map/disks/vm1-vda' &&
    grep -q 'the incoming migration did not finish: leecher stopped, partial copy removed' \
        '$tmp/lv-B/log/r3map-hook.log'"
lv_serial A vm1 verify
ok "A: the guest verifies every block it wrote: nothing lost" \
    wait_until 60 console_passed A "writer-verify 1: [1-9][0-9]* blocks ever written hold their latest write"
ok "A: and goes on writing" bash -c "
    n=\$(tr -d '\r' < '$tmp/lv-A/run/r3map-test/vm1.serial' | grep -c 'writer: seq'); sleep 3;
    test \$(tr -d '\r' < '$tmp/lv-A/run/r3map-test/vm1.serial' | grep -c 'writer: seq') -gt \$n"

ok "A -> B again, at full speed: it succeeds" \
    lv_virsh A migrate --live --persistent --undefinesource vm1 "$(lv_uri B)" \
        --migrateuri "tcp://127.0.0.1:$((port + 1))"
ok "B: the domain runs" running_on B
lv_serial B vm1 stop
ok "B: the guest verifies every block it ever wrote, and powers off" \
    wait_until 120 console_passed B "writer-final: [1-9][0-9]* blocks ever written hold their latest write"
ok "  (no block wrong)" _negate grep -q 'R3MAP-RESULT: FAIL' <(lv_console B vm1)
done_testing
