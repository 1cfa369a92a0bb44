#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Live migration of a running, writing guest between two QEMU
# processes on this machine, its disk moved by r3map:
#
#   source       nbdkit --filter=r3map-track r3map-dir   (the seeder)
#                qemu -drive file=nbd+unix:///?socket=src.sock,if=none,...
#                     -device virtio-blk-pci,...,cyls=..,heads=..,secs=..
#   destination  nbdkit --filter=r3map-pull r3map-dir source=the seeder
#                qemu (the same, on dst.sock) -incoming defer
#
# The guest runs the checksummed writer (r3map-guest-io.c) throughout;
# its table of what it wrote lives in its RAM and migrates with it, so
# on the destination it verifies every block it ever wrote, on either
# side.  The order of the steps is what this test is about:
#
# 1. The leecher starts first and pre-copies the disk at once (its
#    background pull, then rounds of "what changed since").
# 2. The destination QEMU starts with -incoming, its disk on the
#    leecher.  QEMU connects to the export when it starts: the NBD
#    handshake (size, flags) must not wait, and it does not: r3map-pull
#    holds only data requests (read, write, flush, cache) until
#    finalize, never the connection.  But QEMU also reads sector 0 when
#    it creates a virtio-blk device without a geometry (to guess one
#    from the partition table), in its main loop: held, that read would
#    hang the destination QEMU, QMP included, until finalize.  So both
#    QEMUs give the device its geometry (disk_dev in qemu-functions.sh);
#    then an incoming QEMU issues no disk request before it runs, and
#    accepts the migration while the leecher holds its disk.
# 3. The source QEMU migrates with the capability pause-before-switchover.
#    Why that moment to seal, and not another:
#    - the STOP event comes too early: QEMU sends it when it stops the
#      vCPUs but before it drains the disk requests in flight
#      (bdrv_drain_all, then bdrv_flush_all); a seal then would refuse
#      a write the guest already issued, and the guest would see an I/O
#      error after the migration;
#    - "completed" (postmigrate) is safe but late: the guest already
#      runs on the destination and its disk waits there for the seal
#      and finalize, a pause QEMU's downtime does not count;
#    - "pre-switchover": the source guest is stopped, its requests are
#      drained and flushed, and the destination does not run yet.  The
#      disk is moved while nothing can write to it, the cost shows in
#      QEMU's downtime, and a failure here can still fall back to the
#      source (unseal, then migrate_cancel: test-live-migrate-cancel.sh).
# 4. At pre-switchover: r3map seal on the source (writes in flight
#    done, later ones refused, the final changed set fixed), r3map
#    finalize on the destination (the final set marked missing, the
#    held requests released), then migrate-continue.  The source QEMU
#    then inactivates its disk, which flushes: a flush is accepted by
#    a sealed seeder (only writes are refused).
# 5. The guest resumes on the destination and keeps writing; what it
#    reads there that is not local yet is fetched on demand (post-copy)
#    while the rest is pulled in the background.
# 6. Once r3map status says every chunk is local, the leecher has let
#    the source go: the source QEMU quits, the source nbdkit stops and
#    its directory is deleted, and the guest neither notices nor loses
#    anything (it verifies again, then once more when it stops).

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
requires_guest

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

size=64M secs=2
[ -n "$R3MAP_QEMU_FULL" ] && { size=512M; secs=8; }
# Under valgrind every byte the leecher pulls is slow.
[ -n "$R3MAP_VALGRIND" ] && size=16M
work="r3map.work=writer r3map.report=0.5 r3map.rate=2 r3map.sync=64"
status () { "$r3map" status --json "$tmp/dst.status"; }
json () { status | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
seq_now ()
{
    local n
    n=$(_console "$1" | sed -n 's/.*writer: seq \([0-9]*\) written.*/\1/p' | tail -n 1)
    echo "${n:-0}"
}
refused_none ()
{
    local line
    line=$(track_status "$1")
    echo "$line"
    [ "${line%refused=0}" != "$line" ]
}
wrote_since () { [ "$(seq_now "$1")" -gt "$2" ]; }

# --- The source ------------------------------------------------------------
mkdir "$tmp/src" "$tmp/dst"
nbdkit_start src --filter="$track" "$(plugin dir)" "$tmp/src" size=$size \
    track-control="$tmp/src.ctl"
# shellcheck disable=SC2046
guest_start s "$work" $(disk_dev uri "$tmp/src.sock" vda)
must "the source guest is writing" guest_wait_line s 'writer: seq [1-9][0-9]* written' 90
sleep "$secs"

# --- 1. The leecher --------------------------------------------------------
nbdkit_start dst --filter="$pullf" "$(plugin dir)" "$tmp/dst" size=$size \
    source="nbd+unix:///?socket=$tmp/src.sock" state="$tmp/dst.state" \
    status="$tmp/dst.status" precopy-interval=100ms
leeching () { "$r3map" status "$tmp/dst.status" 2>&1 | grep -q '^finalized: not yet (clients wait)'; }
ok "the leecher pre-copies, not finalized" _wait_for 60 leeching

# --- 2. The destination QEMU -------------------------------------------------
# shellcheck disable=SC2046
guest_incoming d "$work" $(disk_dev uri "$tmp/dst.sock" vda)
must "the destination QEMU opened the leecher's export and waits for the migration" \
    bash -c "$QMP_PY --timeout 10 '$tmp/d.qmp' status inmigrate \
                 cmd query-block | grep -q 'socket=$tmp/dst.sock'"

# --- 3. Migrate, up to pre-switchover ------------------------------------------
migrate_prepare s
t0=$(date +%s%N)
must "migrate: RAM moves while the guest writes, then the source pauses" \
    guest_qmp s cmd migrate "{\"uri\": \"unix:$tmp/d.mig\"}" \
        migration pre-switchover
ok "the source guest is stopped" guest_qmp s status finish-migrate

# --- 4. Seal, finalize, continue ---------------------------------------------
ms () { echo $(( $(date +%s%N) / 1000000 )); }
t_pause=$(ms)
must "r3map seal: the source refuses writes from now on" bash -c "
    '$r3map' seal '$tmp/src.ctl' | tee /dev/stderr | grep -q ': sealed seq=[1-9]'"
must "r3map finalize: the destination's disk is released" bash -c "
    '$r3map' finalize --timeout=30s '$tmp/dst.status' | tee /dev/stderr |
        grep -q '^finalized: '"
t_fin=$(ms)
ok "the seal refused no write: the guest had none in flight" \
    refused_none "$tmp/src.ctl"
must "migrate-continue: the migration completes" bash -c "
    $QMP_PY --timeout 60 '$tmp/s.qmp' \
        cmd migrate-continue '{\"state\": \"pre-switchover\"}' \
        migration completed | tail -n 1 > '$tmp/mig.json'"
t1=$(date +%s%N)
echo "# seal and finalize: $((t_fin - t_pause)) ms; completed $(( t1 / 1000000 - t_fin)) ms after"
echo "# migration: $(( (t1 - t0) / 1000000 )) ms from migrate to completed," \
     "downtime $(/usr/bin/python3 -c "import json; print(json.load(open('$tmp/mig.json')).get('downtime'))" 2>&1) ms"

# --- 5. The guest on the destination -------------------------------------------
must "the guest runs on the destination" guest_qmp d status running
ok "the source QEMU is in postmigrate" guest_qmp s status postmigrate
seq0=$(seq_now d)
ok "the guest keeps writing on the destination" \
    _wait_for 60 wrote_since d "$seq0"
guest_serial d latency
ok "its longest write since it started (the migration included)" \
    guest_wait_line d 'writer: longest write [0-9.]* ms' 30
_console d | grep 'writer: longest write' | sed 's/^/# /'
guest_serial d verify
ok "it verifies every block it ever wrote, on either side" \
    guest_wait_line d '^R3MAP-RESULT: PASS writer-verify 1: [1-9]' 90

# --- 6. The destination no longer needs the source -----------------------------
guest_stop s
ok "the source QEMU quits" test "$(cat "$tmp/s.status")" = 0
ok "r3map status: every chunk is local" \
    timeout 120 "$r3map" status --follow --interval=200ms "$tmp/dst.status"
ok "the leecher pulled about the disk's size" bash -c "
    test \$(( $(json bytes_pulled) )) -ge $(numfmt --from=iec $size)"
ok "the source nbdkit stops" nbdkit_stop src
rm -rf "$tmp/src"
seq1=$(seq_now d)
ok "the guest keeps writing without its source" _wait_for 60 wrote_since d "$seq1"
guest_serial d verify
ok "and verifies everything again" \
    guest_wait_line d '^R3MAP-RESULT: PASS writer-verify 2: [1-9]' 90
guest_serial d stop
guest_wait d
ok "the guest stops, verifying once more, and powers off" \
    test "$(cat "$tmp/d.status")" = 0
ok "its final verify passed, no check failed" guest_passed d 'writer-final: [1-9]'
ok "the leecher logged no error" bash -c "
    ! grep -i 'error' '$tmp/dst.nbdkit.log'"

nbdkit_stop dst
done_testing
