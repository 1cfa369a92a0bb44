#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A disk migrates between two nbdkit processes on this machine while a
# writer (the model checker) writes through the source: the seeder is
# r3map-dir under r3map-track, the leecher r3map-dir under r3map-pull
# with source= the seeder.  Clients of the leecher wait until finalize;
# after the seal and finalize the destination holds, byte for byte,
# what the source held at the seal, and the writer goes on there.

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

# The disk: 256 MiB normally, 64 MiB under valgrind.
size=256M
ops=20000
if [ -n "$R3MAP_VALGRIND" ]; then size=64M; ops=4000; fi

src_sock="$tmp/src.sock" dst_sock="$tmp/dst.sock"
src="nbd+unix:///?socket=$src_sock"
dst="nbd+unix:///?socket=$dst_sock"

mkdir "$tmp/a" "$tmp/b"
start_logged src --filter="$track" "$(plugin dir)" dir="$tmp/a" \
    size=$size track-control="$tmp/a.ctl"
ok "the seeder is up" nbdinfo --size "$src"

# Initial contents: random data over the first half.
head -c $(( $(numfmt --from=iec $size) / 2 )) /dev/urandom > "$tmp/init"
truncate -s $size "$tmp/init"
ok "initial contents written to the source" \
    nbdcopy --flush "$tmp/init" "$src"

# The writer runs on the source during the migration; it saves its
# model when done, then the source is sealed.
$IOTEST --quiet --ops $ops --connections 2 --max-size 262144 \
    --initial "$tmp/init" --model "$tmp/sealed.model" "$src" \
    > "$tmp/writer.out" 2>&1 &
writer=$!

start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" state="$tmp/b.state" status="$tmp/b.status" \
    precopy-interval=200ms

ok "a client of the leecher waits until finalize" bash -c "
    ! timeout 2 qemu-io -f raw -c 'read 0 512' '$dst' >/dev/null 2>&1"
wait $writer
writer_status=$?
ok "the writer finished on the source, its model held" test $writer_status = 0
sed 's/^/# /' "$tmp/writer.out"

ok "probing the seeder during the migration: --list, --map of its views" bash -c "
    nbdinfo --list '$src' >/dev/null &&
    nbdinfo --map 'nbd+unix:///r3map:changed-since:0?socket=$src_sock' >/dev/null &&
    nbdinfo --map 'nbd+unix:///r3map:heat?socket=$src_sock' >/dev/null"
ok "r3map status shows the leecher before finalize" bash -c "
    '$r3map' status '$tmp/b.status' | tee /dev/stderr |
        grep -q '^finalized: not yet (clients wait)'"
ok "r3map finalize before the seal: times out, says why" bash -c "
    '$r3map' finalize --timeout=500ms '$tmp/b.status' > '$tmp/early' 2>&1
    test \$? = 1 && cat '$tmp/early' &&
        grep -q 'not finalized within 500 ms (is the source sealed?)' '$tmp/early'"

ok "r3map seal seals the source" bash -c "
    '$r3map' seal '$tmp/a.ctl' | tee /dev/stderr | grep -q '^$tmp/a.ctl: sealed seq=[0-9]*\$'"
ok "r3map finalize returns once the leecher finalized" bash -c "
    '$r3map' finalize --timeout=30s '$tmp/b.status' | tee '$tmp/fin1' | grep -q '^finalized: '"
ok "r3map finalize again: the same answer, at once" bash -c "
    timeout 5 '$r3map' finalize '$tmp/b.status' | cmp - '$tmp/fin1'"
sed 's/^/# /' "$tmp/fin1"
ok "r3map status --json: one JSON object, finalized" bash -c "
    '$r3map' status --json '$tmp/b.status' | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d[\"leech_finalized_ms\"] > 0 and d[\"running\"] is True, d'"
ok "the leecher did pre-copy rounds" bash -c "
    '$r3map' status '$tmp/b.status' | tee /dev/stderr |
        grep -q '^leecher:   [1-9][0-9]* pre-copy rounds'"
ok "probing the sealed seeder changes nothing" bash -c "
    '$r3map' seal '$tmp/a.ctl' > '$tmp/s1' &&
    nbdinfo --list '$src' >/dev/null &&
    nbdinfo --map 'nbd+unix:///r3map:sealed-since:0?socket=$src_sock' >/dev/null &&
    '$r3map' seal '$tmp/a.ctl' | cmp - '$tmp/s1'"
ok "the sealed source refuses writes" \
    _negate qemu-io -f raw -c "write 0 512" "$src"

# The sum of the source as sealed.
ok "the source reads back as the writer's model" \
    $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$src"
ok "the destination, once finalized, is the source at the seal" \
    timeout 60 $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$dst"
ok "and sha256 of both are equal" bash -c "
    test \"\$(nbdcopy '$src' - | sha256sum)\" = \"\$(nbdcopy '$dst' - | sha256sum)\""
ok "the writer goes on at the destination and its model holds" \
    $IOTEST --quiet --ops 2000 --connections 2 --initial "$tmp/sealed.model" \
        --model "$tmp/after.model" "$dst"
ok "the pull completes, then the source can go" bash -c "
    timeout 120 '$r3map' status --follow --interval=200ms '$tmp/b.status' >/dev/null"
ok "the copy is complete since after finalize (complete_ms)" bash -c "
    '$r3map' status --json '$tmp/b.status' | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
assert 0 < d[\"leech_finalized_ms\"] <= d[\"complete_ms\"] <= d[\"updated_ms\"], d'"
ok "the source is stopped" stop_server src
rm -rf "$tmp/a"
ok "the destination still reads everything, and the writer goes on" \
    $IOTEST --quiet --ops 1000 --connections 2 --verify-only \
        --initial "$tmp/after.model" "$dst"

done_testing
