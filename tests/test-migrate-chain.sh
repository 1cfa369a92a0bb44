#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A chained migration over TLS: A to B to C, where B is a leecher of A
# and at the same time a seeder (r3map-track stacked above r3map-pull),
# with writes at each stage; the content is equal at each step.  All
# traffic between the hosts uses TLS with a pre-shared key: a leecher
# with the wrong key, or without TLS, is refused.

. "$srcdir/functions.sh"
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version
requires psktool --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
size=32M

psktool -u alice -p "$tmp/keys.psk" >/dev/null 2>&1
psktool -u alice -p "$tmp/wrong.psk" >/dev/null 2>&1
tls="--tls=require --tls-psk=$tmp/keys.psk"
# The seeder at NAME, as a leecher reaches it (TLS with KEYS).
tls_uri () { echo "nbds+unix://alice@/?socket=$tmp/$1.sock&tls-psk-file=${2:-$tmp/keys.psk}"; }

mkdir "$tmp/a" "$tmp/b" "$tmp/c"

# --- A: a seeder over TLS ------------------------------------------------
start_logged a $tls --filter="$track" "$(plugin dir)" dir="$tmp/a" \
    size=$size track-control="$tmp/a.ctl"
head -c $size /dev/urandom > "$tmp/init"
ok "A holds random data (written over TLS)" \
    nbdcopy --flush "$tmp/init" "$(tls_uri a)"
ok "A refuses a client without TLS" _negate nbdinfo --size "$(cat "$tmp/a.uri")"

# --- Refusals ------------------------------------------------------------
ok "a leecher with the wrong key is refused, saying so" \
    refused "source=nbds+unix://alice@/?socket=$tmp/a.sock&tls-psk-file=$tmp/wrong.psk: connect: gnutls_handshake: " \
    --filter="$pullf" "$(plugin dir)" dir="$tmp/b" size=$size \
    source="$(tls_uri a "$tmp/wrong.psk")"
ok "a leecher without TLS is refused, saying so" \
    refused "source=nbd+unix:///?socket=$tmp/a.sock: connect: handshake: server requires TLS encryption first" \
    --filter="$pullf" "$(plugin dir)" dir="$tmp/b" size=$size \
    source="nbd+unix:///?socket=$tmp/a.sock"

# --- B: leecher of A, seeder for C ---------------------------------------
start_logged b $tls --filter="$track" --filter="$pullf" "$(plugin dir)" \
    dir="$tmp/b" size=$size source="$(tls_uri a)" status="$tmp/b.status" \
    track-control="$tmp/b.ctl" precopy-interval=100ms
# (qemu-io knows no nbds+unix: the new contents are copied whole.)
head -c $((3 * 1048576)) /dev/urandom |
    dd of="$tmp/init" bs=1M seek=1 conv=notrunc status=none
ok "A is written while B pulls" nbdcopy "$tmp/init" "$(tls_uri a)"
ok "seal A, B finalizes" bash -c "
    '$r3map' seal '$tmp/a.ctl' && '$r3map' finalize --timeout=30s '$tmp/b.status'"
ok "B is A at the seal, byte for byte" bash -c "
    nbdcopy '$(tls_uri b)' - | cmp - '$tmp/init'"

# --- C: leecher of B while B is still in post-copy or done --------------
start_logged c --filter="$pullf" "$(plugin dir)" dir="$tmp/c" size=$size \
    source="$(tls_uri b)" status="$tmp/c.status" precopy-interval=100ms
head -c $((2 * 1048576)) /dev/urandom |
    dd of="$tmp/init" bs=1M seek=20 conv=notrunc status=none
ok "B is written while C pulls (the writes of B's own VM)" \
    nbdcopy "$tmp/init" "$(tls_uri b)"
ok "seal B, C finalizes" bash -c "
    '$r3map' seal '$tmp/b.ctl' && '$r3map' finalize --timeout=30s '$tmp/c.status'"
ok "C is B at its seal, byte for byte" bash -c "
    nbdcopy '$(cat "$tmp/c.uri")' - | cmp - '$tmp/init'"
ok "A and B can go: C's pull completes" bash -c "
    timeout 60 '$r3map' status --follow --interval=100ms '$tmp/c.status' >/dev/null"
stop_server b
stop_server a
ok "C alone still reads it all" bash -c "
    nbdcopy '$(cat "$tmp/c.uri")' - | cmp - '$tmp/init'"

for f in a b c; do [ -f "$tmp/$f.log" ] && sed "s/^/# $f: /" "$tmp/$f.log"; done
done_testing
