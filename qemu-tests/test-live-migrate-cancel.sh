#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Live migrations that do not happen: the guest stays on the source,
# keeps writing there and loses nothing (it verifies every block it
# ever wrote), and the destination (its QEMU, its leecher, the leecher's
# partial copy, state and status files) is cleaned away.  The setup is
# that of test-live-migrate.sh, whose comments explain the order.
#
# 1. migrate_cancel mid-way, while RAM is being copied: nothing was
#    sealed, so there is nothing to undo on the source; the destination
#    QEMU gives up (it exits 1) and the leecher is stopped.
# 2. Cancelled at pre-switchover, after the seal (as when the
#    destination fails at the last moment): the source must be unsealed
#    BEFORE migrate_cancel.  QEMU resumes the source guest as soon as
#    the migration is cancelled; a write it issued before the unseal
#    would be refused (EROFS), an I/O error for the guest.

. "$srcdir/../tests/functions.sh"
. "$srcdir/qemu-functions.sh"
# Under valgrind this test would add a minute or two to the suite, and
# the filter paths it takes (unseal, a leecher stopped while it pulls)
# are checked under valgrind by ../tests/test-track.sh and
# ../tests/test-migrate-faults.sh already.
[ -n "$R3MAP_VALGRIND" ] &&
    skip_all "not under valgrind (its filter paths are checked in tests/)"
requires_guest

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

size=64M
[ -n "$R3MAP_QEMU_FULL" ] && size=512M
work="r3map.work=writer r3map.report=0.5 r3map.rate=2 r3map.sync=64"
seq_now ()
{
    local n
    n=$(_console "$1" | sed -n 's/.*writer: seq \([0-9]*\) written.*/\1/p' | tail -n 1)
    echo "${n:-0}"
}
wrote_since () { [ "$(seq_now "$1")" -gt "$2" ]; }
# track_has CONTROL WORD...: the seeder's status line holds every WORD.
track_has ()
{
    local l w
    l=" $(track_status "$1") "
    echo "$l"
    shift
    for w in "$@"; do [[ "$l" == *" $w "* ]] || return 1; done
}
ram_sent () { guest_qmp "$1" cmd query-migrate | grep -q '"transferred": [1-9]'; }

# A destination: a leecher and an incoming QEMU on it.
destination ()
{
    local n=$1
    mkdir "$tmp/$n"
    nbdkit_start "$n" --filter="$pullf" "$(plugin dir)" "$tmp/$n" size=$size \
        source="nbd+unix:///?socket=$tmp/src.sock" state="$tmp/$n-pull.state" \
        status="$tmp/$n-pull.status" precopy-interval=100ms
    # shellcheck disable=SC2046
    guest_incoming "$n" "$work" $(disk_dev uri "$tmp/$n.sock" vda)
    must "$n: the destination QEMU waits for the migration" \
        guest_qmp "$n" status inmigrate
}

# Remove a destination that will not be used: its QEMU is gone already.
# Only the logs stay (the test's exit removes them).
remove_destination ()
{
    local n=$1
    nbdkit_stop "$n"
    rm -rf "$tmp/$n" "$tmp/$n"-pull.{state,status} "$tmp/$n".{sock,mig,qmp,serial.sock}
    ok "$n: the leecher is stopped, its partial copy and files removed" bash -c "
        ! ls -d '$tmp/$n'* | grep -v '\.\(serial\|qemu\.out\|start\|status\|timeout\.pid\|nbdkit\.log\)\$'"
}

mkdir "$tmp/src"
nbdkit_start src --filter="$track" "$(plugin dir)" "$tmp/src" size=$size \
    track-control="$tmp/src.ctl"
# shellcheck disable=SC2046
guest_start s "$work" $(disk_dev uri "$tmp/src.sock" vda)
must "the source guest is writing" guest_wait_line s 'writer: seq [1-9][0-9]* written' 90

# --- 1. Cancelled while RAM is copied ---------------------------------------
destination d1
# Slow enough (4 MB/s) that the RAM copy is still going when cancelled.
migrate_prepare s 4000000
must "d1: migrate starts" \
    guest_qmp s cmd migrate "{\"uri\": \"unix:$tmp/d1.mig\"}" migration active
must "d1: RAM is being copied" _wait_for 30 ram_sent s
ok "d1: migrate_cancel" guest_qmp s cmd migrate_cancel migration cancelled
ok "d1: the source guest runs on" guest_qmp s status running
guest_gone d1 30
ok "d1: the destination QEMU gave up and exited" \
    test "$(cat "$tmp/d1.status" 2>/dev/null)" = 1
ok "d1: the source was never sealed" track_has "$tmp/src.ctl" "sealed=no"
remove_destination d1
seq=$(seq_now s)
ok "d1: the guest keeps writing on the source" _wait_for 60 wrote_since s "$seq"
guest_serial s verify
ok "d1: it verifies every block it ever wrote" \
    guest_wait_line s '^R3MAP-RESULT: PASS writer-verify 1: [1-9]' 90

# --- 2. Cancelled at pre-switchover, after the seal ----------------------------
destination d2
migrate_prepare s
must "d2: migrate, up to pre-switchover" \
    guest_qmp s cmd migrate "{\"uri\": \"unix:$tmp/d2.mig\"}" \
        migration pre-switchover
must "d2: r3map seal" "$r3map" seal "$tmp/src.ctl"
ok "d2: the leecher finalizes" "$r3map" finalize --timeout=30s "$tmp/d2-pull.status"
# The switchover is abandoned: unseal first, then cancel.
ok "d2: r3map seal --unseal" bash -c "
    '$r3map' seal --unseal '$tmp/src.ctl' | tee /dev/stderr | grep -q ': unsealed'"
ok "d2: migrate_cancel" guest_qmp s cmd migrate_cancel migration cancelled
ok "d2: the source guest runs on" guest_qmp s status running
guest_gone d2 30
ok "d2: the destination QEMU gave up and exited" \
    test "$(cat "$tmp/d2.status" 2>/dev/null)" = 1
remove_destination d2
seq=$(seq_now s)
ok "d2: the guest keeps writing on the source" _wait_for 60 wrote_since s "$seq"
ok "d2: the source is unsealed and refused none of the guest's writes" \
    track_has "$tmp/src.ctl" sealed=no refused=0
guest_serial s verify
ok "d2: it verifies every block it ever wrote" \
    guest_wait_line s '^R3MAP-RESULT: PASS writer-verify 2: [1-9]' 90

guest_serial s stop
guest_wait s
ok "the guest stops, verifying once more, and powers off" \
    test "$(cat "$tmp/s.status")" = 0
ok "no check failed" guest_passed s 'writer-final: [1-9]'
nbdkit_stop src
done_testing
