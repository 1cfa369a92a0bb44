#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map migrate: both ends of a migration on this machine, with its
# hooks.  A disk migrates while a writer (the model checker) writes
# through the source; --on-before-sync waits for the writer to stop, as
# a hook suspending a VM would.  Checked: every hook runs, once, in
# order, with the documented environment; at the seal the destination
# holds exactly what the source held; the figures printed are the
# leecher's own; both servers are gone afterwards and the destination's
# store holds the disk.  Then a failing --on-before-sync: the migration
# is cancelled with nothing sealed, and the source takes writes.

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

size=32M
ops=3000
if [ -n "$R3MAP_VALGRIND" ]; then ops=1000; fi
bytes=$(numfmt --from=iec $size)
total=$((bytes / 65536))

# ---- Bad options: one line each, exit 1, nothing started -------------
ok "an unknown option" \
    one_error "^r3map: migrate: unknown option --bogus" \
        $R3MAP migrate --bogus dir -- dir
ok "no -- between the two ends" \
    one_error "^r3map: migrate: give the source's plugin and arguments, then --" \
        $R3MAP migrate dir dir=/x size=1M
ok "no destination after --" \
    one_error "^r3map: migrate: give the source's plugin" \
        $R3MAP migrate dir dir=/x size=1M --
ok "a bad --timeout" \
    one_error "^r3map: migrate: --timeout=soon: not a duration" \
        $R3MAP migrate --timeout=soon dir -- dir
ok "a bad --chunk-size" \
    one_error "^r3map: migrate: --chunk-size=1K: must be a power of 2 from 4K" \
        $R3MAP migrate --chunk-size=1K dir -- dir
ok "--on-before-sync without its command" \
    one_error "^r3map: migrate: --on-before-sync needs a value" \
        $R3MAP migrate --on-before-sync

# The source's store, with random data over its first half.
mkdir "$tmp/a" "$tmp/b"
head -c $((bytes / 2)) /dev/urandom > "$tmp/init"
truncate -s $size "$tmp/init"
start_server fill "$(plugin dir)" dir="$tmp/a" size=$size
nbdcopy --flush "$tmp/init" "$(cat "$tmp/fill.uri")"
stop_server fill

# ---- A migration while the source is written -------------------------
src="nbd+unix:///?socket=$tmp/src.sock"
dst="nbd+unix:///?socket=$tmp/dst.sock"
ctl="$tmp/a.ctl"
status="$tmp/b.status"
# Every hook appends its phase and the variables it was given, one line.
record='echo "$R3MAP_PHASE src=$R3MAP_SOURCE dst=$R3MAP_DEST ctl=$R3MAP_CONTROL status=$R3MAP_STATUS size=$R3MAP_SIZE chunk=$R3MAP_CHUNK_SIZE total=$R3MAP_CHUNKS_TOTAL local=$R3MAP_CHUNKS_LOCAL pulled=$R3MAP_BYTES_PULLED dirty=$R3MAP_DIRTY_CHUNKS dirty_bytes=$R3MAP_DIRTY_BYTES rounds=$R3MAP_PRECOPY_ROUNDS seq=$R3MAP_SEAL_SEQ downtime=$R3MAP_DOWNTIME_MS result=$R3MAP_RESULT" >> '"'$tmp/hooks'"
# The application stops writing: wait (bounded) for the writer to end.
stop_writer="for i in \$(seq 600); do
    [ -s '$tmp/writer.pid' ] && ! kill -0 \$(cat '$tmp/writer.pid') 2>/dev/null && exit 0
    sleep 0.1
done; exit 1"
# At the seal: the source is what the writer wrote, and the destination
# (finalized) is the source, byte for byte.
at_seal="$IOTEST --quiet --verify-only --initial '$tmp/sealed.model' \"\$R3MAP_SOURCE\" &&
    nbdcopy \"\$R3MAP_SOURCE\" - | sha256sum > '$tmp/src.sum' &&
    nbdcopy \"\$R3MAP_DEST\" - | sha256sum > '$tmp/dst.sum'"

timeout 180 $R3MAP migrate --source-unix="$tmp/src.sock" \
    --dest-unix="$tmp/dst.sock" --control="$ctl" --status="$status" \
    --state="$tmp/b.state" --interval=100ms --timeout=120s \
    --on-chunk-is-local="$record" \
    --on-before-sync="$record; $stop_writer" \
    --on-after-sync="$record; $at_seal" \
    --on-before-close="$record" \
    dir dir="$tmp/a" size=$size \
    -- dir dir="$tmp/b" size=$size precopy-interval=100ms \
    > "$tmp/migrate.out" 2> "$tmp/migrate.err" &
migrate=$!              # timeout's: a TERM cancels the migration
cleanup_fn "kill $migrate 2>/dev/null"

# The "VM" writes to the source as soon as the seeder serves.
wait_until 60 test -S "$tmp/src.sock"
$IOTEST --quiet --ops $ops --connections 2 --max-size 262144 \
    --initial "$tmp/init" --model "$tmp/sealed.model" "$src" \
    > "$tmp/writer.out" 2>&1 &
writer=$!
echo $writer > "$tmp/writer.pid"
wait $writer
ok "the writer wrote through the source during the migration" test $? = 0
wait $migrate
migrate_status=$?
sed 's/^/# /' "$tmp/migrate.err"
grep -v '^Pre-copy\|^Converged\|^Pull' "$tmp/migrate.out" | sed 's/^/# /'
ok "r3map migrate exited 0" test $migrate_status = 0

sed 's/^/# /' "$tmp/hooks" | grep -v '^# chunk-is-local'
ok "the hooks ran in order: chunk-is-local during pre-copy, before-sync, after-sync, chunk-is-local, before-close" bash -c "
    cut -d' ' -f1 '$tmp/hooks' | uniq | tr '\n' ' ' | tee /dev/stderr |
        grep -qx 'chunk-is-local before-sync after-sync \\(chunk-is-local \\)\\?before-close '"
ok "each of before-sync, after-sync and before-close ran once" bash -c "
    for h in before-sync after-sync before-close; do
        test \$(grep -c \"^\$h \" '$tmp/hooks') = 1 || exit 1
    done"
common="src=$src dst=$dst ctl=$ctl status=$status size=$bytes chunk=65536 total=$total"
ok "every hook has the source, destination, control, status and disk" bash -c "
    ! grep -v '^[a-z-]* $common local=[0-9]* pulled=[0-9]* ' '$tmp/hooks'"
ok "chunk-is-local: the counters, batched, the last run before the seal with every chunk" bash -c "
    grep '^chunk-is-local ' '$tmp/hooks' | grep -v ' dirty= dirty_bytes= rounds= seq=[0-9]* downtime=[0-9]* result=\$' && exit 1
    test -z \"\$(grep '^chunk-is-local' '$tmp/hooks' | cut -d' ' -f9 | uniq -d)\" &&
    grep -B1 '^before-sync ' '$tmp/hooks' | head -1 | grep -q ' local=$total '"
ok "before-sync: converged, every chunk copied, nothing sealed yet" \
    grep -q "^before-sync $common local=$total pulled=[0-9]* dirty= dirty_bytes= rounds= seq= downtime= result=\$" "$tmp/hooks"

json=$("$abs_top_builddir/tools/r3map" status --json "$status")
final=$(echo "$json" | sed 's/.*"leech_final_chunks": \([0-9]*\).*/\1/')
rounds=$(echo "$json" | sed 's/.*"leech_rounds": \([0-9]*\).*/\1/')
dirty_bytes=$((final * 65536)); [ $dirty_bytes -gt $bytes ] && dirty_bytes=$bytes
downtime=$(sed -n 's/^downtime: *\([0-9]*\) ms .*/\1/p' "$tmp/migrate.out")
ok "after-sync: the final changed set, the seal's number, the downtime" \
    grep -q "^after-sync $common local=[0-9]* pulled=[0-9]* dirty=$final dirty_bytes=$dirty_bytes rounds=$rounds seq=[1-9][0-9]* downtime=$downtime result=\$" "$tmp/hooks"
seq=$(sed -n 's/^after-sync .* seq=\([0-9]*\) .*/\1/p' "$tmp/hooks")
ok "R3MAP_SEAL_SEQ is the number the seal answered" \
    grep -qx "sealed:      the source's last write is number $seq" "$tmp/migrate.out"
ok "before-close: every chunk local, result=migrated" \
    grep -q "^before-close $common local=$total pulled=[0-9]* dirty= dirty_bytes= rounds= seq=[1-9][0-9]* downtime=$downtime result=migrated\$" "$tmp/hooks"

ok "at the seal the source was what the writer wrote, and the destination the same" bash -c "
    test -s '$tmp/src.sum' && cmp '$tmp/src.sum' '$tmp/dst.sum'"
pulled=$(echo "$json" | sed 's/.*"bytes_pulled": \([0-9]*\).*/\1/')
mib=$(awk "BEGIN { v = $pulled / 1048576; printf (v >= 100 ? \"%.0f\" : \"%.1f\", v) }")
ok "the figures: downtime, total time, bytes moved (the leecher's count)" bash -c "
    grep -q '^downtime:    [0-9]* ms (seal sent -> destination released)\$' '$tmp/migrate.out' &&
    grep -q '^total time:  [0-9]* ms (destination start -> every chunk local)\$' '$tmp/migrate.out' &&
    grep -qx 'bytes moved: $mib MiB for a 32.0 MiB disk' '$tmp/migrate.out'"
ok "at least the disk was moved" test "$pulled" -ge "$bytes"
ok "both servers are gone" bash -c "
    ! nbdinfo --size '$src' 2>/dev/null && ! nbdinfo --size '$dst' 2>/dev/null &&
    '$abs_top_builddir/tools/r3map' status '$status' | grep -q '^phase: *stopped'"
start_server after "$(plugin dir)" dir="$tmp/b" size=$size
ok "the destination's store holds the disk as the writer left it" \
    $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" \
        "$(cat "$tmp/after.uri")"
stop_server after

# ---- --quiet: the figures only ---------------------------------------
truncate -s $size "$tmp/c.img"
ok "with --quiet only the three figures are printed (any nbdkit plugin)" bash -c "
    timeout 120 $R3MAP migrate --quiet --timeout=60s \
        --source-unix='$tmp/src.sock' dir dir='$tmp/b' size=$size \
        -- file file='$tmp/c.img' > '$tmp/quiet.out' 2>> '$tmp/quiet.err' &&
    cat '$tmp/quiet.out' &&
    test \$(wc -l < '$tmp/quiet.out') = 3 &&
    grep -q '^bytes moved: 32.0 MiB for a 32.0 MiB disk' '$tmp/quiet.out' &&
    cmp '$tmp/c.img' '$tmp/sealed.model'"

# ---- A failing --on-before-sync cancels, nothing sealed --------------
rm -f "$tmp/hooks"
write_source="qemu-io -f raw -c 'write -P 0x5a 0 64k' \"\$R3MAP_SOURCE\" >/dev/null &&
    nbdinfo 'nbd+unix:///r3map:changed-since:0?socket=$tmp/src.sock' |
        grep -q 'sealed=no' && echo writable >> '$tmp/cancel'"
timeout 120 $R3MAP migrate --source-unix="$tmp/src.sock" \
    --dest-unix="$tmp/dst.sock" --status="$status" --timeout=60s --quiet \
    --on-before-sync="$record; exit 3" \
    --on-after-sync="$record" \
    --on-before-close="$record; $write_source" \
    dir dir="$tmp/a" size=$size -- dir dir="$tmp/b" size=$size \
    > "$tmp/cancel.out" 2> "$tmp/cancel.err"
cancel_status=$?
sed 's/^/# /' "$tmp/cancel.err"
ok "r3map migrate exits 1" test $cancel_status = 1
ok "it says the hook failed and the migration was cancelled" bash -c "
    grep -qx 'r3map: migrate: --on-before-sync: the command exited with status 3' '$tmp/cancel.err' &&
    grep -qx 'r3map: migrate: cancelled: the source was not changed by the migration' '$tmp/cancel.err' &&
    test ! -s '$tmp/cancel.out'"
ok "after-sync never ran; before-close ran, result=cancelled" bash -c "
    cut -d' ' -f1 '$tmp/hooks' | tr '\n' ' ' | grep -qx 'before-sync before-close ' &&
    grep -q '^before-close .* seq= downtime= result=cancelled\$' '$tmp/hooks'"
ok "in before-close the source was not sealed, and took a write" \
    grep -qx writable "$tmp/cancel"
ok "the leecher never finalized" bash -c "
    '$abs_top_builddir/tools/r3map' status --json '$status' |
        grep -q '\"leech_finalized_ms\": 0,'"
start_server after "$(plugin dir)" dir="$tmp/a" size=$size
ok "the source's store kept that write" bash -c "
    qemu-io -f raw -c 'read -P 0x5a 0 64k' '$(cat "$tmp/after.uri")' |
        tee /dev/stderr | grep -q '^read 65536/65536'"
stop_server after

# ---- A destination that does not start: cancelled the same way -------
rm -f "$tmp/hooks"
mkdir "$tmp/small"
timeout 120 $R3MAP migrate --source-unix="$tmp/src.sock" --quiet \
    --on-before-sync="$record" --on-before-close="$record" \
    dir dir="$tmp/a" size=$size -- dir dir="$tmp/small" size=16M \
    > /dev/null 2> "$tmp/small.err"
small_status=$?
sed 's/^/# /' "$tmp/small.err"
ok "a destination of another size: nbdkit says why, r3map cancels, exit 1" bash -c "
    test $small_status = 1 &&
    grep -q 'they must be the same size' '$tmp/small.err' &&
    grep -q '^r3map: migrate: the leecher (nbdkit) exited with status 1 before ' '$tmp/small.err' &&
    grep -qx 'r3map: migrate: cancelled: the source was not changed by the migration' '$tmp/small.err' &&
    cut -d' ' -f1 '$tmp/hooks' | tr '\n' ' ' | grep -qx 'before-close ' &&
    grep -q ' result=cancelled\$' '$tmp/hooks'"

# ---- A TERM during the migration cancels it too -----------------------
rm -f "$tmp/hooks"
timeout --foreground 120 $R3MAP migrate --source-unix="$tmp/src.sock" \
    --dest-unix="$tmp/dst.sock" --status="$status" --timeout=60s --quiet \
    --on-before-sync="$record; touch '$tmp/in-sync'; sleep 1" \
    --on-after-sync="$record" --on-before-close="$record" \
    dir dir="$tmp/a" size=$size -- dir dir="$tmp/b" size=$size \
    > /dev/null 2> "$tmp/term.err" &
term=$!                 # timeout's: it passes the TERM on to r3map alone
cleanup_fn "kill $term 2>/dev/null"
wait_until 60 test -e "$tmp/in-sync"
kill -TERM $term
wait $term
term_status=$?
sed 's/^/# /' "$tmp/term.err"
ok "a TERM while --on-before-sync runs: the hook ends, then the migration is cancelled" bash -c "
    test $term_status = 1 &&
    grep -qx 'r3map: migrate: interrupted before the seal' '$tmp/term.err' &&
    grep -qx 'r3map: migrate: cancelled: the source was not changed by the migration' '$tmp/term.err' &&
    cut -d' ' -f1 '$tmp/hooks' | tr '\n' ' ' | grep -qx 'before-sync before-close ' &&
    grep -q ' result=cancelled\$' '$tmp/hooks'"
ok "both servers are gone" bash -c "
    ! nbdinfo --size '$src' 2>/dev/null && ! nbdinfo --size '$dst' 2>/dev/null"

done_testing
