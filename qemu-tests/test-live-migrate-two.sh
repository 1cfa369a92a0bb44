#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Live migration of a writing guest with two disks, each moved by its
# own seeder and leecher (attached in two syntaxes: -drive with the old
# nbd:unix: name, and -blockdev driver=nbd), sealed together by one
# r3map seal at pre-switchover: the writer writes across both, so a
# disk sealed later than the other would hold writes the other lacks.
# The order of the steps is that of test-live-migrate.sh (see there).

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires_guest

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

work="r3map.work=writer r3map.disks=vda,vdb r3map.report=0.5 r3map.rate=2 r3map.sync=64"
seq_now ()
{
    local n
    n=$(_console "$1" | sed -n 's/.*writer: seq \([0-9]*\) written.*/\1/p' | tail -n 1)
    echo "${n:-0}"
}
wrote_since () { [ "$(seq_now "$1")" -gt "$2" ]; }

# vda: 64M in 64K chunks; vdb: 32M in 256K chunks.
declare -A size=([vda]=64M [vdb]=32M) chunk=([vda]=64K [vdb]=256K)
for d in vda vdb; do
    mkdir "$tmp/src-$d" "$tmp/dst-$d"
    nbdkit_start "src-$d" --filter="$track" "$(plugin dir)" "$tmp/src-$d" \
        size=${size[$d]} chunk-size=${chunk[$d]} track-chunk-size=${chunk[$d]} \
        track-control="$tmp/$d.ctl"
done
disks ()
{
    echo "$(disk_dev old "$tmp/$1-vda.sock" vda) $(disk_dev blockdev "$tmp/$1-vdb.sock" vdb)"
}
# shellcheck disable=SC2046
guest_start s "$work" $(disks src)
must "the source guest writes across both disks" \
    guest_wait_line s 'writer: seq [1-9][0-9]* written' 90
ok "... two devices" guest_wait_line s 'writer: run [0-9a-f]*, 2 device' 5
sleep 2

for d in vda vdb; do
    nbdkit_start "dst-$d" --filter="$pullf" "$(plugin dir)" "$tmp/dst-$d" \
        size=${size[$d]} chunk-size=${chunk[$d]} \
        source="nbd+unix:///?socket=$tmp/src-$d.sock" \
        state="$tmp/$d.state" status="$tmp/$d.status" precopy-interval=100ms
done
# shellcheck disable=SC2046
guest_incoming d "$work" $(disks dst)
must "the destination QEMU waits for the migration" guest_qmp d status inmigrate

migrate_prepare s
must "migrate, up to pre-switchover" \
    guest_qmp s cmd migrate "{\"uri\": \"unix:$tmp/d.mig\"}" migration pre-switchover
must "one r3map seal seals both disks" bash -c "
    '$r3map' seal '$tmp/vda.ctl' '$tmp/vdb.ctl' > '$tmp/sealed' &&
    cat '$tmp/sealed' && test \$(grep -c ': sealed seq=[1-9]' '$tmp/sealed') = 2"
for d in vda vdb; do
    must "$d: the leecher finalizes" \
        "$r3map" finalize --timeout=30s "$tmp/$d.status"
done
must "migrate-continue: the migration completes" \
    guest_qmp s cmd migrate-continue '{"state": "pre-switchover"}' migration completed
must "the guest runs on the destination" guest_qmp d status running

seq=$(seq_now d)
ok "the guest keeps writing on the destination" _wait_for 60 wrote_since d "$seq"
guest_serial d verify
ok "it verifies every block it ever wrote on both disks" \
    guest_wait_line d '^R3MAP-RESULT: PASS writer-verify 1: [1-9]' 90

guest_stop s
ok "the source QEMU quits" test "$(cat "$tmp/s.status")" = 0
for d in vda vdb; do
    ok "$d: every chunk is local" \
        timeout 120 "$r3map" status --follow --interval=200ms "$tmp/$d.status"
    ok "$d: the source nbdkit stops" nbdkit_stop "src-$d"
    rm -rf "$tmp/src-$d"
done
seq=$(seq_now d)
ok "the guest keeps writing without its sources" _wait_for 60 wrote_since d "$seq"
guest_serial d stop
guest_wait d
ok "it stops, verifying once more, and powers off" test "$(cat "$tmp/d.status")" = 0
ok "no check failed" guest_passed d 'writer-final: [1-9]'

for d in vda vdb; do nbdkit_stop "dst-$d"; done
done_testing
