#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Pre-copy converges under a writer that never lets up.  The writer
# rewrites chunks all over the disk throughout, so no round ever finds
# nothing to copy again: with converge-threshold=0 the "small rounds"
# rule never holds, and max-rounds=1000 is far away.  The rounds must
# still end soon after the first pass over the disk, when a round has
# no less to copy again than the one before (more rounds would only
# move more bytes), and the migration then ends with the destination
# equal to the source at the seal.
#
# After the first pass a round comes as soon as what the round before
# made missing is local again, not precopy-interval later: with
# precopy-interval=600s the rounds still converge within seconds.
#
# And with precopy=off nothing is copied before the seal: the rounds
# run, finalize releases the clients, and the disk is fetched after;
# with pull-delay= as well, only that long after finalize.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires qemu-io --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

size=32M
src_sock="$tmp/src.sock" dst_sock="$tmp/dst.sock"
src="nbd+unix:///?socket=$src_sock"
dst="nbd+unix:///?socket=$dst_sock"

mkdir "$tmp/a" "$tmp/b"
start_logged src --filter="$track" "$(plugin dir)" dir="$tmp/a" \
    size=$size track-control="$tmp/a.ctl"
head -c $size /dev/urandom > "$tmp/init"
ok "the source holds data" nbdcopy --flush "$tmp/init" "$src"

# The writer: one qemu-io, a 4 KiB write to a random chunk every 20 ms
# for up to 60 s (killed once the test has what it needs).
chunks=$(( $(numfmt --from=iec $size) / 65536 ))
for i in $(seq 3000); do
    echo "-c"; echo "write -P $((i % 250 + 1)) $(( (RANDOM * 32768 + RANDOM) % chunks * 65536 )) 4k"
    echo "-c"; echo "sleep 20"
done > "$tmp/writes"
mapfile -t writes < "$tmp/writes"
start_writer () {
    qemu-io -f raw "${writes[@]}" "$src" > "$tmp/writer.out" 2>&1 &
    writer=$!
    echo $writer > "$tmp/writer.pid"
}
start_writer

start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" status="$tmp/b.status" \
    precopy-interval=100ms converge-threshold=0 converge-rounds=2 \
    max-rounds=1000

converged_within () {           # converged_within SECONDS
    local i
    for (( i = 0; i < $1 * 10; i++ )); do
        "$r3map" status "$tmp/b.status" | grep -q '^phase: *waiting for the seal' &&
            return 0
        sleep 0.1
    done
    "$r3map" status "$tmp/b.status" >&2
    return 1
}
# A fresh source holding $tmp/init, and no destination yet.
fresh_source ()                 # fresh_source LABEL
{
    stop_server dst
    stop_server src
    rm -rf "$tmp/a" "$tmp/b" "$tmp/b.status"
    mkdir "$tmp/a" "$tmp/b"
    start_logged src --filter="$track" "$(plugin dir)" dir="$tmp/a" \
        size=$size track-control="$tmp/a.ctl"
    ok "$1: the source holds data" nbdcopy --flush "$tmp/init" "$src"
}
same_as_source ()
{
    test "$(nbdcopy "$src" - | sha256sum)" = "$(nbdcopy "$dst" - | sha256sum)"
}
ok "the rounds converge within 20 s although every round finds writes" \
    converged_within 20
ok "the writer was still writing when they did" kill -0 $writer
ok "in a few rounds, not max-rounds" bash -c "
    '$r3map' status --json '$tmp/b.status' | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print(\"# rounds:\", d[\"leech_rounds\"])
assert 1 <= d[\"leech_rounds\"] < 100, d'"

# The VM stops, the source is sealed, the destination finalizes.
kill $writer
wait $writer 2>/dev/null
ok "r3map seal seals the source" "$r3map" seal "$tmp/a.ctl"
ok "the writer did write to the source" _negate cmp -s "$tmp/init" \
    <(nbdcopy "$src" -)
ok "the destination finalizes" "$r3map" finalize --timeout=30s "$tmp/b.status"
ok "the destination is the source at the seal" same_as_source

# --- rounds after the first pass follow the pull ------------------------
fresh_source interval
start_writer
start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" status="$tmp/b.status" \
    precopy-interval=600s converge-threshold=0 converge-rounds=2 \
    max-rounds=1000
ok "interval: with precopy-interval=600s, converged within 20 s" \
    converged_within 20
ok "interval: the writer was still writing when they did" kill -0 $writer
kill $writer
wait $writer 2>/dev/null
ok "interval: sealed" "$r3map" seal "$tmp/a.ctl"
ok "interval: the destination finalizes" \
    "$r3map" finalize --timeout=30s "$tmp/b.status"
ok "interval: the destination is the source at the seal" same_as_source

# --- precopy=off ---------------------------------------------------------
fresh_source precopy=off
start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" status="$tmp/b.status" \
    precopy=off precopy-interval=100ms
ok "precopy=off: the rounds converge" converged_within 20
sleep 1
ok "precopy=off: nothing was copied before the seal" bash -c "
    '$r3map' status --json '$tmp/b.status' | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d[\"bytes_pulled\"] == 0 and d[\"chunks_local\"] == 0, d'"
ok "precopy=off: a write before the seal" \
    qemu-io -f raw -c "write -P 7 1M 64k" "$src"
ok "precopy=off: sealed" "$r3map" seal "$tmp/a.ctl"
ok "precopy=off: the destination finalizes" \
    "$r3map" finalize --timeout=30s "$tmp/b.status"
ok "precopy=off: the destination is the source at the seal" same_as_source
ok "precopy=off: the whole disk is then pulled" bash -c "
    timeout 60 '$r3map' status --follow --interval=100ms '$tmp/b.status' >/dev/null &&
    '$r3map' status '$tmp/b.status' | grep -q '^phase: *complete'"

# --- precopy=off pull-delay=4s -------------------------------------------
# Finalize releases the clients at once; the background pull waits,
# counting from finalize (the seal comes after more than the delay
# since the start).
pulled () { status_field "$tmp/b.status" bytes_pulled; }
fresh_source pull-delay
start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" status="$tmp/b.status" \
    precopy=off precopy-interval=100ms pull-delay=4s
ok "pull-delay: the rounds converge" converged_within 20
sleep 5
ok "pull-delay: sealed" "$r3map" seal "$tmp/a.ctl"
ok "pull-delay: the destination finalizes" \
    "$r3map" finalize --timeout=30s "$tmp/b.status"
ok "pull-delay: a read after finalize is served" \
    qemu-io -r -f raw -c "read 1M 4k" "$dst"
sleep 1
ok "pull-delay: a second after finalize, only that chunk was pulled" \
    test "$(pulled)" = 65536
ok "pull-delay: then the whole disk is pulled" bash -c "
    timeout 60 '$r3map' status --follow --interval=100ms '$tmp/b.status' >/dev/null &&
    '$r3map' status '$tmp/b.status' | grep -q '^phase: *complete'"
ok "pull-delay: the destination is the source at the seal" same_as_source

done_testing
