#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The final changed set of a disk far larger than one block status
# request covers: 16 GiB of 4 KiB chunks (4 Mi chunks; the leecher asks
# in pieces of 4 GiB, several in flight).  Five chunks written after the
# rounds converged, on both sides of the pieces' boundaries, must be
# exactly the final set, and read back on the destination.  (r3map-dir
# on both sides: a sparse directory, and nbdkit's memory plugin does not
# run clean under valgrind.)

. "$srcdir/functions.sh"
requires qemu-io --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

src="nbd+unix:///?socket=$tmp/src.sock"
dst="nbd+unix:///?socket=$tmp/dst.sock"
G=$((1024 * 1024 * 1024))

# The seeder holds a leecher's wait for the seal for a minute, so that
# no round falls between the writes and the seal.
mkdir "$tmp/a" "$tmp/b"
start_logged src --filter="$track" "$(plugin dir)" dir="$tmp/a" size=16G \
    chunk-size=4K track-chunk-size=4K \
    track-control="$tmp/a.ctl" track-seal-wait=60s
# No background pull: only the final set and on-demand reads.
start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" size=16G \
    source="$src" \
    chunk-size=4K pull-workers=0 status="$tmp/b.status" precopy-interval=100ms
ok "the rounds converge" \
    wait_until 30 bash -c "'$r3map' status '$tmp/b.status' |
        grep -q '^phase: *waiting for the seal'"

offsets="0 $((4 * G - 4096)) $((4 * G)) $((9 * G + 8192)) $((16 * G - 4096))"
args=()
n=0
for o in $offsets; do
    n=$((n + 1))
    args+=(-c "write -P $n $o 4k")
done
ok "five chunks written on the source" qemu-io -f raw "${args[@]}" "$src"
ok "sealed" "$r3map" seal "$tmp/a.ctl"
ok "finalized" "$r3map" finalize --timeout=60s "$tmp/b.status"
ok "the final set is exactly those five chunks" bash -c "
    '$r3map' status --json '$tmp/b.status' | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d[\"leech_final_chunks\"] == 5, d'"
n=0
for o in $offsets; do
    n=$((n + 1))
    ok "the destination reads chunk at $o as written" \
        qemu-io -f raw -c "read -P $n $o 4k" "$dst"
done

done_testing
