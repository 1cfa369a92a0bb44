#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# libr3map, the slice frontend: random reads and writes through the
# mapped memory compared with a model (r3map-slicetest model); only
# the chunks touched are fetched, each once, counted at the remote by
# nbdkit's log filter; what was written is in the backend after
# r3map_sync (and not without it); threads at once; readahead for a
# sequential reader, bounded; the same through r3map-pull, whose chunk
# size libr3map adopts.

. "$srcdir/functions.sh"
requires_root
requires nbdcopy --version

SLICETEST="$abs_top_builddir/tests/r3map-slicetest"
filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"

if [ -n "$R3MAP_VALGRIND" ]; then
    # valgrind does not implement userfaultfd(2): r3map_map must fail
    # at once, saying why, rather than hang or crash.
    truncate -s 1M "$tmp/disk"
    start_server remote file "$tmp/disk"
    ok "under valgrind, r3map_map fails at once and says why" \
        eval "! timeout 60 $(valgrind_expecting_enosys) $SLICETEST touch \
              '$(cat "$tmp/remote.uri")' 0 2> '$tmp/err' && grep -q 'valgrind' '$tmp/err'"
    ok "...and valgrind reports nothing but the system call" valgrind_only_enosys
    skip_check "the slice checks: valgrind does not implement userfaultfd(2)" \
        "(ENOSYS), which libr3map is built on"
    done_testing
    exit
fi

chunk=65536
size=$((64 * 1024 * 1024))
nchunks=$((size / chunk))

# Chunks (of $2 bytes) that the remote read from line $1 of its log
# (to line $3, or the end), one a line, in order, duplicates kept (a
# read of several chunks, as readahead sends, gives each); a read that
# is not exactly one aligned chunk is reported on stderr.
remote_chunks ()
{
    tail -n +"$1" "$tmp/remote.log" | head -n $(( ${3:-999999999} - $1 + 1 )) |
        sed -n 's/.* Read .*offset=\(0x[0-9a-f]*\) count=\(0x[0-9a-f]*\).*/\1 \2/p' |
        while read -r o c; do
            if [ $((o % $2)) != 0 ] || [ $((c)) != "$2" ]; then
                echo "not one aligned chunk: offset $o count $c" >&2
            fi
            for ((k = o / $2; k < (o + c + $2 - 1) / $2; k++)); do echo $k; done
        done
}
log_lines () { wc -l < "$tmp/remote.log"; }

head -c $size /dev/urandom > "$tmp/model"
cp "$tmp/model" "$tmp/disk"
start_server remote --filter=log file "$tmp/disk" logfile="$tmp/remote.log"
uri=$(cat "$tmp/remote.uri")

# --- model, one thread, no readahead -----------------------------------
from=$(($(log_lines) + 1))
ok "random reads and writes match the model (R3MAP_MAP_RANDOM)" \
    $SLICETEST model --random --ops=300 --seed=1 --chunk-size=$chunk \
        --touched="$tmp/touched" --out="$tmp/model.out" --end=sync \
        "$uri" "$tmp/model"
remote_chunks $from $chunk > "$tmp/fetched" 2> "$tmp/unaligned"
ok "every read at the remote was one aligned chunk" test ! -s "$tmp/unaligned"
ok "only the touched chunks were fetched ($(wc -l < "$tmp/touched") of $nchunks)" \
    eval "sort -n '$tmp/fetched' | uniq | diff - '$tmp/touched'"
ok "...each once" test "$(wc -l < "$tmp/fetched")" = "$(wc -l < "$tmp/touched")"
ok "...and not all of them (the check means something)" \
    test "$(wc -l < "$tmp/touched")" -lt $((nchunks / 2))
ok "after r3map_sync, the backend holds what was written" \
    cmp "$tmp/disk" "$tmp/model.out"
written_chunks ()
{
    tail -n +"$1" "$tmp/remote.log" |
        sed -n 's/.* Write .*offset=\(0x[0-9a-f]*\).*/\1/p' |
        while read -r o; do echo $((o / chunk)); done
}
ok "...the writes went to touched chunks only" \
    eval "test -z \"\$(written_chunks $from | grep -vxF -f '$tmp/touched')\""

# The same without a sync, unmapped with R3MAP_UNMAP_DISCARD: the
# writes must not reach the backend (so the check above can fail).
cp "$tmp/disk" "$tmp/model"
ok "writes discarded without a sync" \
    $SLICETEST model --random --ops=300 --seed=2 --end=discard \
        --out="$tmp/model.out" "$uri" "$tmp/model"
ok "...are not in the backend" _negate cmp -s "$tmp/disk" "$tmp/model.out"
ok "...which still holds what it held" cmp -s "$tmp/disk" "$tmp/model"

# --- threads, syncs, readahead on ----------------------------------------
ok "4 threads sharing every chunk, a sync every 100 operations" \
    $SLICETEST model --threads=4 --ops=1500 --seed=3 --sync-every=100 \
        --max-len=20000 --out="$tmp/model.out" "$uri" "$tmp/model"
ok "...the backend holds what was written (r3map_unmap wrote the rest)" \
    cmp "$tmp/disk" "$tmp/model.out"
cp "$tmp/disk" "$tmp/model"

# --- readahead -------------------------------------------------------------
# A sequential reader of the first 64 chunks: readahead fetches ahead
# of it, but at most one window (64 chunks) past what it read.
offsets=$(for ((i = 0; i < 64; i++)); do echo $((i * chunk)); done)
from=$(($(log_lines) + 1))
LIBR3MAP_DEBUG=1 $SLICETEST touch "$uri" $offsets > "$tmp/out" 2> "$tmp/debug"
ok "a sequential reader of 64 chunks" grep -qx ok "$tmp/out"
remote_chunks $from $chunk > "$tmp/fetched" 2>/dev/null
ok "...got chunks read ahead (libr3map's count)" \
    grep -q "([1-9][0-9]* read ahead, [1-9][0-9]* of those used)" "$tmp/debug"
ok "...fetched each chunk at most once" \
    test -z "$(sort -n "$tmp/fetched" | uniq -d)"
ok "...and at most 64 past the last it read ($(wc -l < "$tmp/fetched") fetched)" \
    test "$(sort -n "$tmp/fetched" | tail -n1)" -lt 128
from=$(($(log_lines) + 1))
$SLICETEST touch "$uri" 0 $((5 * chunk)) $((17 * chunk)) > /dev/null
ok "a reader out of order gets no readahead" \
    test "$(remote_chunks $from $chunk 2>/dev/null | wc -l)" = 3

# --- through r3map-pull ------------------------------------------------------
# chunk-size=128K: libr3map takes the filter's preferred block size,
# so each fault is one whole chunk at the filter, and each chunk the
# filter fetches from the remote is one that was touched.
truncate -s $size "$tmp/local"
from=$(($(log_lines) + 1))
ok "through r3map-pull: random reads and writes match the model" \
    nbdkit -U - --filter=log --filter="$filter" file "$tmp/local" \
        source="$uri" chunk-size=128K pull-workers=0 \
        logfile="$tmp/client.log" \
        --run "$SLICETEST model --random --ops=300 --seed=4 \
                   --chunk-size=131072 --touched='$tmp/touched' \
                   --out='$tmp/model.out' \"\$uri\" '$tmp/model' &&
               wc -l < '$tmp/remote.log' > '$tmp/mark' &&
               wc -l < '$tmp/client.log' > '$tmp/client.mark' &&
               nbdcopy \"\$uri\" '$tmp/via-pull'"
# (nbdcopy, after the mark, made the filter fetch the rest.)
remote_chunks $from 131072 "$(cat "$tmp/mark")" > "$tmp/fetched" 2> "$tmp/unaligned"
ok "...libr3map read whole 128K chunks, the filter's preferred size" \
    eval "head -n \$(cat '$tmp/client.mark') '$tmp/client.log' |
          sed -n 's/.* Read .*count=\(0x[0-9a-f]*\).*/\1/p' |
          sort -u | grep -qvx 0x20000 && exit 1 || exit 0"
ok "...the remote served whole 128K chunks" test ! -s "$tmp/unaligned"
ok "...only those touched, each once" \
    eval "sort -n '$tmp/fetched' | diff - '$tmp/touched'"
ok "...and the export holds what was written" cmp "$tmp/via-pull" "$tmp/model.out"

done_testing
