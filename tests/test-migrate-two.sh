#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Two disks of one VM migrate together: one `r3map seal` seals both
# seeders at once, after both writers stopped, and both leechers
# finalize to exactly what their source held at the seal.

. "$srcdir/functions.sh"
requires nbdcopy --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
size=32M
ops=3000
[ -n "$R3MAP_VALGRIND" ] && ops=1000

for d in vda vdb; do
    mkdir "$tmp/src-$d" "$tmp/dst-$d"
    start_logged "src-$d" --filter="$track" "$(plugin dir)" \
        dir="$tmp/src-$d" size=$size track-control="$tmp/$d.ctl"
    start_logged "dst-$d" --filter="$pullf" "$(plugin dir)" \
        dir="$tmp/dst-$d" size=$size source="$(cat "$tmp/src-$d.uri")" \
        status="$tmp/$d.status" precopy-interval=100ms
done

# Both "VM disks" are written at once while they migrate.
for d in vda vdb; do
    $IOTEST --quiet --ops $ops --connections 2 --trim-reads-zero \
        --model "$tmp/$d.model" "$(cat "$tmp/src-$d.uri")" \
        > "$tmp/$d.writer" 2>&1 &
    eval "w_$d=\$!"
done
wait $w_vda; a=$?
wait $w_vdb; b=$?
ok "both writers ran and their models held" test $a = 0 -a $b = 0

ok "one r3map seal seals both disks" bash -c "
    '$r3map' seal '$tmp/vda.ctl' '$tmp/vdb.ctl' > '$tmp/sealed' &&
    cat '$tmp/sealed' && test \$(grep -c ': sealed seq=' '$tmp/sealed') = 2"
for d in vda vdb; do
    ok "$d: the leecher finalizes" \
        "$r3map" finalize --timeout=30s "$tmp/$d.status"
    ok "$d: the destination is the source at the seal" \
        $IOTEST --quiet --verify-only --initial "$tmp/$d.model" \
            "$(cat "$tmp/dst-$d.uri")"
done

done_testing
